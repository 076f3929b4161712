"""nn.Modules over low-bit block weights: a Linear for q4 / q8 weights and a q8 embedding lookup; and
the float32 linear of the decoding core (`float_linear`), which calls the same kernel library.

A batch of up to `SMALL_BATCH_ROWS` rows (decoding, verification of a few drafts) runs the C
kernel, which reads each weight once; a longer prompt dequantizes the matrix (C) and calls
F.linear, which is faster from about that many rows on (see docs/lowbit.md).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from models.lowbit import native
from models.lowbit.formats import Q4Weight, Q8Weight, blockable, decode_q4, decode_q8, encode_q8, nbytes

logger = logging.getLogger(__name__)

SMALL_BATCH_ROWS = 32  # rows up to which the fused kernel beats dequantize + F.linear (docs/lowbit.md)


def float_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x W^T for a bias-free float32 weight (N, K): up to `native.MAX_ROWS` rows (decoding, a verification)
    through the weight-streaming kernel, which reads fp32 weights about twice as fast as MKL's gemv here
    and gives a row the same bits alone or in a batch; longer inputs, other dtypes, autograd and machines
    without the kernels use F.linear."""
    k = weight.shape[-1]
    rows = x.numel() // k if x.shape[-1] == k else 0
    usable = (0 < rows <= native.MAX_ROWS and k % 16 == 0 and x.dtype == weight.dtype == torch.float32
              and weight.dim() == 2 and weight.is_contiguous()
              and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))
    if not usable or native.kernels() is None:
        return F.linear(x, weight)
    y = native.f32_linear(x.reshape(rows, k).contiguous(), weight)
    return y.reshape(*x.shape[:-1], weight.shape[0])


class LowBitLinear(nn.Module):
    """y = x W^T with W held as q4 or q8 blocks; activations and output float32."""

    def __init__(self, weight: Q4Weight | Q8Weight) -> None:
        super().__init__()
        self.format = "q4" if isinstance(weight, Q4Weight) else "q8"
        self.out_features = weight.qweight.shape[0]
        self.in_features = weight.qweight.shape[1] * (2 if self.format == "q4" else 1)
        self.register_buffer("qweight", weight.qweight)
        self.register_buffer("scale", weight.scale)
        if isinstance(weight, Q4Weight):
            self.register_buffer("minimum", weight.minimum)

    def encoded(self) -> Q4Weight | Q8Weight:
        if self.format == "q4":
            return Q4Weight(self.qweight, self.scale, self.minimum)
        return Q8Weight(self.qweight, self.scale)

    def weight_bytes(self) -> int:
        return nbytes(self.encoded())

    def dequantized(self, reuse_buffer: bool = False) -> torch.Tensor:
        """(N, K) float32 weights (exactly the stored fp32 weights for a lossless encoding).

        `reuse_buffer` writes them into this thread's scratch buffer (valid until the next call).
        """
        if native.kernels() is None:
            encoded = self.encoded()
            return decode_q4(encoded) if isinstance(encoded, Q4Weight) else decode_q8(encoded)
        buffer = native.scratch(self.out_features, self.in_features) if reuse_buffer else None
        if self.format == "q4":
            return native.q4_dequantize(self.qweight, self.scale, self.minimum, buffer)
        return native.q8_dequantize(self.qweight, self.scale, buffer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] == self.in_features, f"input {tuple(x.shape)} does not end in {self.in_features}"
        rows = x.reshape(-1, self.in_features).float().contiguous()  # (M, K)
        if rows.shape[0] > SMALL_BATCH_ROWS or native.kernels() is None:
            return F.linear(x.float(), self.dequantized(reuse_buffer=True))
        if self.format == "q4":
            y = native.q4_linear(rows, self.qweight, self.scale, self.minimum)
        else:
            y = native.q8_linear(rows, self.qweight, self.scale)
        return y.reshape(*x.shape[:-1], self.out_features)  # (..., N)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}"


def fuse_lowbit_linears(modules: list[nn.Module]) -> LowBitLinear | None:
    """One LowBitLinear over several of one format reading the same input (q/k/v, gate/up), or None.

    Their blocks are concatenated along the output rows once; each original module is re-pointed at
    its rows of the fused buffers (views), so nothing is held twice. Split the output at
    `[m.out_features for m in modules]`. For the decoding core's `fuse_linears` (models/lean_layers.py).
    """
    if not modules or not all(isinstance(m, LowBitLinear) for m in modules):
        return None
    linears: list[LowBitLinear] = modules  # type: ignore[assignment]
    if len({(m.format, m.in_features) for m in linears}) != 1:
        return None
    names = ("qweight", "scale", "minimum") if linears[0].format == "q4" else ("qweight", "scale")
    fused = {name: torch.cat([getattr(m, name) for m in linears]).contiguous() for name in names}
    offset = 0
    for module in linears:
        for name in names:
            setattr(module, name, fused[name][offset : offset + module.out_features])
        offset += module.out_features
    parts = [fused[name] for name in names]
    return LowBitLinear(Q4Weight(*parts) if linears[0].format == "q4" else Q8Weight(*parts))


def lossless_q8_linear(weight: torch.Tensor) -> LowBitLinear | None:
    """A q8 LowBitLinear holding exactly `weight` (N, K), or None if the q8 grid cannot represent it.

    SmolLM2's tied embedding / LM head came from Q8_0 blocks, so float32 copies of it re-encode exactly.
    """
    if not blockable(weight) or weight.dtype != torch.float32:
        return None
    encoded = encode_q8(weight.detach())
    if not torch.equal(decode_q8(encoded), weight.detach()):
        return None
    return LowBitLinear(encoded)


class Q8Embedding(nn.Module):
    """Embedding lookup from q8 rows; shares its buffers with a tied LM head (`as_linear`)."""

    def __init__(self, weight: Q8Weight) -> None:
        super().__init__()
        self.register_buffer("qweight", weight.qweight)  # (V, C) int8
        self.register_buffer("scale", weight.scale)  # (V, C/32) float16

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = Q8Weight(self.qweight[input_ids.reshape(-1)], self.scale[input_ids.reshape(-1)])
        return decode_q8(rows).reshape(*input_ids.shape, -1)  # (B, T, C)

    def as_linear(self) -> LowBitLinear:
        return LowBitLinear(Q8Weight(self.qweight, self.scale))
