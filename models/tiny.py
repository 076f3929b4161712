"""Tiny random-weight Llama models with the real SmolLM2 tokenizer, for fast tests."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from models.exits.heads import ExitHeads
from models.manifest import Manifest
from models.store import VariantSpec, write_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from transformers import LlamaConfig, LlamaForCausalLM

logger = logging.getLogger(__name__)

TINY_MODEL_ID = "tiny-llama"
SMOLLM2_VOCAB_SIZE = 49152


def tiny_config(layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2) -> LlamaConfig:
    """A SmolLM2-shaped config (tied embeddings, GQA, same vocab and special ids), just smaller."""
    assert hidden % heads == 0, f"hidden {hidden} not divisible by heads {heads}"
    return LlamaConfig(
        vocab_size=SMOLLM2_VOCAB_SIZE, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=hidden // heads, max_position_embeddings=2048, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def make_tiny_model(seed: int = 0, layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2) -> LlamaForCausalLM:
    """Random-weight LlamaForCausalLM in eval mode, deterministic in `seed`."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(layers, hidden, heads, kv_heads))
    return model.eval()


def make_varied_tiny_model(seed: int = 0, layers: int = 4) -> LlamaForCausalLM:
    """A tiny model whose residual branches are scaled up, so its greedy output changes from token to
    token (random small weights repeat one token forever, which no decoding test can tell apart)."""
    model = make_tiny_model(seed, layers)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(3.0)
        for layer in model.model.layers:
            for linear in (layer.self_attn.o_proj, layer.mlp.down_proj, layer.mlp.up_proj):
                linear.weight.mul_(60.0)
    return model


def write_tiny_model(root: Path | str, model_id: str = TINY_MODEL_ID, seed: int = 0, layers: int = 4,
                     hidden: int = 64, exit_layers: tuple[int, ...] = ()) -> Manifest:
    """Write a tiny model (and zero-initialised exit heads at `exit_layers`) into the store at `root`."""
    model = make_tiny_model(seed, layers, hidden)
    heads = ExitHeads(hidden, exit_layers) if exit_layers else None
    spec = VariantSpec(variant="tiny", storage_dtype="float32", source=f"random seed {seed}")
    return write_model(root, model_id, model, spec, exit_heads=heads)
