"""Write a Llama's weights + config into a directory, and build a Llama back from one, fast.

Storage by variant: float32 / bfloat16 safetensors with transformers' parameter names (the tied LM
head is not stored twice), int8 per-row weights + float32 scales (see `models.quantize`), or q4 / int8w
blocks of 32 (see `models.lowbit.storage`).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.errors import ManifestError
from models.lowbit.storage import LOWBIT_DTYPES, encode_state_dict, install_lowbit_modules
from models.quantize import (
    QWEIGHT_SUFFIX,
    SCALE_SUFFIX,
    Int8Embedding,
    quantize_state_dict,
    replace_linears,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub from model code
from transformers import LlamaConfig, LlamaForCausalLM

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8,
                  "q4": torch.uint8, "int8w": torch.int8}
_DROPPED_CONFIG_KEYS = ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version")


def clean_config(config: LlamaConfig, num_layers: int | None = None) -> LlamaConfig:
    """A plain LlamaConfig (no GGUF quantization_config), optionally with fewer layers."""
    data = {k: v for k, v in config.to_dict().items() if k not in _DROPPED_CONFIG_KEYS}
    if num_layers is not None:
        assert 0 < num_layers <= data["num_hidden_layers"], f"cannot keep {num_layers} layers"
        data["num_hidden_layers"] = num_layers
        data.pop("layer_types", None)
    data["dtype"] = "float32"
    return LlamaConfig(**data)


def storage_state_dict(model: LlamaForCausalLM, num_layers: int | None = None) -> dict[str, torch.Tensor]:
    """State dict to store: tied LM head dropped, layers >= num_layers dropped."""
    keep_layers = model.config.num_hidden_layers if num_layers is None else num_layers
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        if name.startswith("model.layers.") and int(name.split(".")[2]) >= keep_layers:
            continue
        state[name] = tensor
    return state


def save_weights(
    model: LlamaForCausalLM, directory: Path, storage_dtype: str, num_layers: int | None = None,
    max_abs_error: float | None = None,
) -> None:
    """Write config.json + model.safetensors for `model` stored as `storage_dtype`.

    int8 keeps one copy of a tied embedding: the lookup dequantizes it, the LM head runs it as int8.
    q4 / int8w with `max_abs_error` check every re-encoded weight (raises ModelStoreError).
    """
    assert storage_dtype in STORAGE_DTYPES, f"unknown storage dtype {storage_dtype!r}"
    config = clean_config(model.config, num_layers)
    state = storage_state_dict(model, num_layers)
    if storage_dtype == "int8":
        state = quantize_state_dict(state)  # a tied LM head reuses the int8 embedding at load time
    elif storage_dtype in LOWBIT_DTYPES:
        state = encode_state_dict(state, storage_dtype, max_abs_error)  # the tied head too, at load time
    else:
        state = {name: t.to(STORAGE_DTYPES[storage_dtype]).contiguous() for name, t in state.items()}
    config_data = config.to_dict()
    config_data["edgefleet_storage_dtype"] = storage_dtype
    (directory / CONFIG_NAME).write_text(json.dumps(config_data, indent=2, sort_keys=True) + "\n")
    save_file(state, str(directory / WEIGHTS_NAME))


def read_config(directory: Path) -> tuple[LlamaConfig, str]:
    """Parse config.json. Raises ManifestError if it is malformed."""
    try:
        data = json.loads((directory / CONFIG_NAME).read_text())
        storage_dtype = data.pop("edgefleet_storage_dtype")
        return LlamaConfig(**data), storage_dtype
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ManifestError(f"bad {CONFIG_NAME} in {directory}: {error}") from error


def load_llama(directory: Path) -> LlamaForCausalLM:
    """Build the model in `directory` without initialising weights (meta device + assign)."""
    config, storage_dtype = read_config(directory)
    stored = load_file(str(directory / WEIGHTS_NAME))
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    if storage_dtype == "int8":
        embed = "model.embed_tokens.weight"
        if config.tie_word_embeddings:
            stored["lm_head.weight" + QWEIGHT_SUFFIX] = stored[embed + QWEIGHT_SUFFIX]
            stored["lm_head.weight" + SCALE_SUFFIX] = stored[embed + SCALE_SUFFIX]
        state = {name: t for name, t in stored.items() if not name.endswith((QWEIGHT_SUFFIX, SCALE_SUFFIX))}
        model.model.embed_tokens = Int8Embedding(stored[embed + QWEIGHT_SUFFIX], stored[embed + SCALE_SUFFIX])
        model.config.tie_word_embeddings = False
    else:
        state = stored
    if storage_dtype in LOWBIT_DTYPES:
        replaced = install_lowbit_modules(model, stored, config.tie_word_embeddings)
        model.config.tie_word_embeddings = False
        state = stored
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if storage_dtype in LOWBIT_DTYPES:
        missing = [name for name in missing if name.rsplit(".", 1)[0] not in replaced]
    if storage_dtype == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch deprecates qint8 tensor creation
            consumed = replace_linears(model, stored)
        missing = [name for name in missing if name + QWEIGHT_SUFFIX not in consumed]
    int8_embedding = storage_dtype == "int8" and ("model.embed_tokens.qweight", "model.embed_tokens.scale")
    missing = [name for name in missing if name != "lm_head.weight" and not (int8_embedding and name in int8_embedding)]
    assert not missing and not unexpected, f"weights mismatch: missing {missing}, unexpected {unexpected}"
    if config.tie_word_embeddings and storage_dtype not in ("int8", *LOWBIT_DTYPES):
        model.lm_head.weight = model.model.embed_tokens.weight
    _materialise_buffers(model, config)
    model.eval()
    return model


def _materialise_buffers(model: LlamaForCausalLM, config: LlamaConfig) -> None:
    """Recreate non-persistent buffers (rotary inv_freq) that stayed on the meta device."""
    rotary_type = type(model.model.rotary_emb)
    model.model.rotary_emb = rotary_type(config=config)
    for name, buffer in model.named_buffers():
        assert not buffer.is_meta, f"buffer {name} left on the meta device"
    for name, param in model.named_parameters():
        assert not param.is_meta, f"parameter {name} left on the meta device"


def count_parameters(model: nn.Module) -> int:
    """Parameter count with shared tensors counted once."""
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if param.data_ptr() not in seen:
            seen.add(param.data_ptr())
            total += param.numel()
    return total
