"""Dequantize the SmolLM2-135M-Instruct GGUF into a plain float32 LlamaForCausalLM (slow: ~20-30 s)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from models.errors import SourceModelError
from models.paths import gguf_path
from models.weights import clean_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

logger = logging.getLogger(__name__)


def load_gguf(path: Path | None = None) -> tuple[LlamaForCausalLM, Any]:
    """(plain float32 LlamaForCausalLM, tokenizer) from the GGUF.

    transformers dequantizes the GGUF but marks the model as quantized (save_pretrained refuses
    it), so the weights are moved into a freshly built LlamaForCausalLM with a clean config.
    Raises SourceModelError if the GGUF is missing or unreadable.
    """
    path = path or gguf_path()
    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as error:
        raise SourceModelError(f"cannot read GGUF {path}: {error}") from error
    config = clean_config(gguf_model.config)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    state = {k: v for k, v in gguf_model.state_dict().items() if k != "lm_head.weight"}
    model.load_state_dict(state, strict=False, assign=True)
    model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    model.eval()
    logger.info("dequantized %s in %.1f s", path.name, time.perf_counter() - started)
    return model, tokenizer


def save_tokenizer_files(tokenizer: Any, directory: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and chat_template.jinja into `directory`."""
    tokenizer.save_pretrained(str(directory))


def extracted_tokenizer_dir(tokenizer: Any) -> Path:
    """A temporary directory holding the tokenizer files (caller removes it)."""
    directory = Path(tempfile.mkdtemp(prefix="edgefleet-tokenizer-"))
    save_tokenizer_files(tokenizer, directory)
    return directory
