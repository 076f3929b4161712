"""Block formats of the low-bit variants: 4-bit with scale + min (like GGUF Q4_1) and 8-bit with a scale (Q8_0).

Blocks are 32 weights along the input dimension, parameters float16:
  q4: w = d * q + m, q in 0..15, packed two per byte (byte j of a block: q[j] | q[j + 16] << 4)
  q8: w = d * q, q in -127..127
SmolLM2's fp32 weights were dequantized from a Q4_1 GGUF (decoder linears) and Q8_0 (the tied
embedding), so re-encoding them finds the original block parameters and is lossless: `decode`
computes d * q + m in float32 exactly as the GGUF reader did (no fused multiply-add).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

BLOCK = 32


@dataclass(frozen=True)
class Q4Weight:
    qweight: torch.Tensor  # (N, K/2) uint8, two 4-bit values per byte
    scale: torch.Tensor  # (N, K/32) float16
    minimum: torch.Tensor  # (N, K/32) float16


@dataclass(frozen=True)
class Q8Weight:
    qweight: torch.Tensor  # (N, K) int8
    scale: torch.Tensor  # (N, K/32) float16


def blockable(weight: torch.Tensor) -> bool:
    """True if `weight` is 2-D with an input dimension made of whole blocks."""
    return weight.dim() == 2 and weight.shape[1] % BLOCK == 0


def _blocks(weight: torch.Tensor) -> torch.Tensor:
    assert blockable(weight), f"weight {tuple(weight.shape)} is not (N, K) with K a multiple of {BLOCK}"
    return weight.float().reshape(weight.shape[0], -1, BLOCK)  # (N, K/32, 32)


def _round_half(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.float16)


def encode_q4(weight: torch.Tensor) -> Q4Weight:
    """Q4_1-style encoding of (N, K) weights; exact for weights on a Q4_1 grid.

    m is the block minimum (the GGUF quantizer gives it q = 0), d the float16 nearest (max - min) / 15.
    Weights off such a grid get the ordinary Q4_1 rounding.
    """
    blocks = _blocks(weight)  # (N, B, 32)
    low, high = blocks.amin(dim=2), blocks.amax(dim=2)  # (N, B)
    minimum = _round_half(low)
    scale = _round_half((high - minimum.float()) / 15)
    safe = torch.where(scale.float() > 0, scale.float(), torch.ones_like(low))
    q = torch.round((blocks - minimum.float()[..., None]) / safe[..., None]).clamp(0, 15).to(torch.uint8)
    packed = q[..., :16] | (q[..., 16:] << 4)  # (N, B, 16)
    return Q4Weight(packed.reshape(weight.shape[0], -1).contiguous(), scale.contiguous(), minimum.contiguous())


def decode_q4(encoded: Q4Weight) -> torch.Tensor:
    """(N, K) float32 weights: d * q + m per block."""
    out = encoded.qweight.shape[0]
    packed = encoded.qweight.reshape(out, -1, BLOCK // 2)  # (N, B, 16)
    q = torch.cat([packed & 0x0F, packed >> 4], dim=2).float()  # (N, B, 32)
    product = encoded.scale.float()[..., None] * q
    return (product + encoded.minimum.float()[..., None]).reshape(out, -1)


def encode_q8(weight: torch.Tensor) -> Q8Weight:
    """Q8_0-style encoding of (N, K) weights (symmetric, absmax / 127 per block); exact on a Q8_0 grid."""
    blocks = _blocks(weight)
    scale = _round_half(blocks.abs().amax(dim=2) / 127)  # (N, B)
    safe = torch.where(scale.float() > 0, scale.float(), torch.ones_like(scale.float()))
    q = torch.round(blocks / safe[..., None]).clamp(-127, 127).to(torch.int8)
    return Q8Weight(q.reshape(weight.shape[0], -1).contiguous(), scale.contiguous())


def decode_q8(encoded: Q8Weight) -> torch.Tensor:
    out = encoded.qweight.shape[0]
    q = encoded.qweight.reshape(out, -1, BLOCK).float()
    return (encoded.scale.float()[..., None] * q).reshape(out, -1)


def nbytes(encoded: Q4Weight | Q8Weight) -> int:
    tensors = [encoded.qweight, encoded.scale] + ([encoded.minimum] if isinstance(encoded, Q4Weight) else [])
    return sum(t.numel() * t.element_size() for t in tensors)
