"""Store a Llama's weights as q4 / q8 blocks and build it back with LowBitLinear modules.

Storage dtypes:
  q4:    decoder linears as q4 (scale + min per 32), the tied embedding / LM head as q8 (scale per 32)
  int8w: every 2-D weight as q8 (int8 weight-only: activations stay float32)
Weights whose input dimension is not a whole number of blocks, and norms, stay float32.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as quantized_dynamic

from models.errors import ModelStoreError
from models.lowbit.formats import (
    Q4Weight,
    Q8Weight,
    blockable,
    decode_q4,
    decode_q8,
    encode_q4,
    encode_q8,
)
from models.lowbit.modules import LowBitLinear, Q8Embedding

logger = logging.getLogger(__name__)

LOWBIT_DTYPES = ("q4", "int8w")
EMBEDDING = "model.embed_tokens.weight"
_Q4_SUFFIXES = (".q4", ".q4_scale", ".q4_min")
_Q8_SUFFIXES = (".q8", ".q8_scale")


def _encode(name: str, tensor: torch.Tensor, storage_dtype: str) -> Q4Weight | Q8Weight:
    if storage_dtype == "q4" and name != EMBEDDING:
        return encode_q4(tensor)
    return encode_q8(tensor)


def encode_state_dict(state: dict[str, torch.Tensor], storage_dtype: str,
                      max_abs_error: float | None = None) -> dict[str, torch.Tensor]:
    """float state dict -> storage dict of q4 / q8 block tensors (and float32 for the rest).

    With `max_abs_error`, every re-encoded weight is decoded and compared with its source; raises
    ModelStoreError naming the first weight further off (a lossless variant built from other weights).
    """
    assert storage_dtype in LOWBIT_DTYPES, f"unknown low-bit storage dtype {storage_dtype!r}"
    stored: dict[str, torch.Tensor] = {}
    worst = 0.0
    for name, tensor in state.items():
        if not blockable(tensor):
            stored[name] = tensor.float().contiguous()
            continue
        encoded = _encode(name, tensor, storage_dtype)
        if max_abs_error is not None:
            decoded = decode_q4(encoded) if isinstance(encoded, Q4Weight) else decode_q8(encoded)
            error = float((decoded - tensor.float()).abs().max())
            worst = max(worst, error)
            if error > max_abs_error:
                raise ModelStoreError(f"{name} is not on a {storage_dtype} grid: max abs error {error:.3g} "
                                      f"> {max_abs_error:.3g}")
        if isinstance(encoded, Q4Weight):
            parts = (encoded.qweight, encoded.scale, encoded.minimum)
            stored.update({name + suffix: part for suffix, part in zip(_Q4_SUFFIXES, parts, strict=True)})
        else:
            stored.update({name + suffix: part for suffix, part in zip(_Q8_SUFFIXES, (encoded.qweight, encoded.scale),
                                                                      strict=True)})
    if max_abs_error is not None:
        logger.info("%s re-encoding: max abs error %.3g over every weight", storage_dtype, worst)
    return stored


def _take(stored: dict[str, torch.Tensor], name: str) -> Q4Weight | Q8Weight | None:
    if name + ".q4" in stored:
        return Q4Weight(*(stored.pop(name + suffix) for suffix in _Q4_SUFFIXES))
    if name + ".q8" in stored:
        return Q8Weight(*(stored.pop(name + suffix) for suffix in _Q8_SUFFIXES))
    return None


def install_lowbit_modules(model: nn.Module, stored: dict[str, torch.Tensor], tied: bool) -> set[str]:
    """Swap the embedding and every nn.Linear held in `stored` as blocks for low-bit modules.

    `stored` keeps only the float tensors afterwards; returns the names of the modules replaced.
    A tied LM head runs on the embedding's q8 blocks (stored once).
    """
    replaced: set[str] = set()
    embedding = _take(stored, EMBEDDING)
    if embedding is not None:
        assert isinstance(embedding, Q8Weight), "the embedding is stored as q8 blocks"
        model.model.embed_tokens = Q8Embedding(embedding)  # type: ignore[union-attr]
        replaced.add("model.embed_tokens")
        if tied:
            model.lm_head = model.model.embed_tokens.as_linear()  # type: ignore[union-attr, operator]
            replaced.add("lm_head")
    for module_name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full_name = f"{module_name}.{child_name}" if module_name else child_name
            if isinstance(child, nn.Linear):
                encoded = _take(stored, f"{full_name}.weight")
                if encoded is not None:
                    setattr(module, child_name, LowBitLinear(encoded))
                    replaced.add(full_name)
    return replaced


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights a one-token forward reads: every linear (LM head included) and norm.

    The embedding lookup reads one row and is left out; a tied head is counted once.
    """
    total, seen = 0, set()
    for name, module in model.named_modules():
        if isinstance(module, LowBitLinear):
            total += module.weight_bytes()
        elif isinstance(module, nn.Linear) or "norm" in name.rsplit(".", 1)[-1]:
            weight = getattr(module, "weight", None)
            if weight is not None and weight.data_ptr() not in seen:
                seen.add(weight.data_ptr())
                total += weight.numel() * weight.element_size()
        elif isinstance(module, quantized_dynamic.Linear):  # int8 weights + per-channel scales
            weight = module.weight()
            total += weight.numel() + weight.shape[0] * 8
    return total
