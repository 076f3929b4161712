"""Llama decoder layers on plain torch ops, as nanoGPT writes GPT: the decoding core's layer math.

Batch-1 decoding is bound by weight bytes, and what it spends beyond them is per-call overhead:
transformers' layer modules build a cache object, a mask and rotary embeddings, and concatenate the
whole KV cache, on every token of every layer. Here, per layer and token: one fused QKV projection,
rotary from a table computed once per model, an in-place write into a preallocated KV cache,
`scaled_dot_product_attention` (no mask for one new position), one fused gate/up projection.

Weights are the loaded model's own: fusing q/k/v (and gate/up) concatenates them once and re-points
the original modules' weights at views of the fused tensor, so nothing is held twice and the
transformers model keeps working (it is the yardstick, `models/reference.py`). Modules that are not
plain float `nn.Linear` (quantized variants) are called one by one instead.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.lowbit.modules import LowBitLinear, float_linear, fuse_lowbit_linears

logger = logging.getLogger(__name__)

Projection = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
_fusing = threading.Lock()  # two stacks built at once over one model must fuse its weights once


def fuse_linears(modules: list[nn.Module]) -> Projection:
    """One matmul for several linears reading the same input; their outputs split back apart.

    Only bias-free float nn.Linear of one dtype are fused; anything else is called module by module.
    """
    sizes = [m.out_features for m in modules]
    lowbit = _fused_lowbit(modules)
    if lowbit is not None:
        return lambda x: lowbit(x).split(sizes, dim=-1)
    plain = all(type(m) is nn.Linear and m.bias is None for m in modules)
    if not plain or len({m.weight.dtype for m in modules}) != 1:
        return lambda x: tuple(m(x) for m in modules)
    with _fusing, torch.no_grad():
        fused = getattr(modules[0], "_fused_with", None)  # fused before (another stack over the same layer)
        if fused is None:
            fused = torch.cat([m.weight for m in modules], dim=0).contiguous()  # (sum(out), C)
            offset = 0
            for module, size in zip(modules, sizes, strict=True):
                module.weight = nn.Parameter(fused[offset : offset + size], requires_grad=False)  # a view: no copy kept
                module._fused_with = fused
                offset += size
    return lambda x: float_linear(x, fused).split(sizes, dim=-1)


def projection(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A single linear: a plain bias-free nn.Linear through `float_linear` (its weight read at call time),
    anything else (quantized variants) as the module itself."""
    if type(module) is nn.Linear and module.bias is None:
        return lambda x: float_linear(x, module.weight)
    return module


def _fused_lowbit(modules: list[nn.Module]) -> nn.Module | None:
    """The low-bit variants' own fusion (`models/lowbit`), done once per group of modules; None if not low-bit."""
    if not all(isinstance(m, LowBitLinear) for m in modules):
        return None
    with _fusing:
        fused = getattr(modules[0], "_fused_lowbit", None)
        if fused is None:
            fused = fuse_lowbit_linears(modules)
            for module in modules:
                object.__setattr__(module, "_fused_lowbit", fused)  # not a submodule: no second registration
        return fused


class RotaryTable:
    """cos/sin of every position up to a capacity, computed once by the model's own rotary embedding."""

    def __init__(self, rotary_emb: nn.Module, capacity: int = 2048) -> None:
        self.rotary_emb = rotary_emb
        self.cos = self.sin = torch.empty(0)
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        with torch.no_grad():
            probe = torch.zeros(1, dtype=torch.float32)
            positions = torch.arange(capacity).unsqueeze(0)  # (1, P)
            cos, sin = self.rotary_emb(probe, position_ids=positions)  # (1, P, D) float32
        self.cos, self.sin = cos[0], sin[0]  # (P, D)

    def at(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(B or 1, T) positions -> cos, sin (B or 1, 1, T, D) in `dtype`, ready to broadcast over heads."""
        needed = int(position_ids.max()) + 1
        if needed > self.cos.shape[0]:
            self._grow(max(needed, 2 * self.cos.shape[0]))
        return self.cos[position_ids].to(dtype).unsqueeze(1), self.sin[position_ids].to(dtype).unsqueeze(1)


_tables: weakref.WeakKeyDictionary[nn.Module, RotaryTable] = weakref.WeakKeyDictionary()


def rotary_table(rotary_emb: nn.Module) -> RotaryTable:
    """The one table of this rotary embedding (shared by every stack over the model)."""
    table = _tables.get(rotary_emb)
    if table is None:
        table = _tables[rotary_emb] = RotaryTable(rotary_emb)
    return table


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LayerKVCache:
    """Keys/values of one layer in a preallocated buffer (B, kv_heads, capacity, head_dim), grown by doubling.

    Appending writes in place; rollback only moves the length.
    """

    def __init__(self, initial_capacity: int = 256) -> None:
        self.initial_capacity = initial_capacity
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add (B, KV, T, D) keys/values; returns views of everything cached, (B, KV, length, D)."""
        batch, heads, count, dim = keys.shape
        end = self.length + count
        if self._keys is None or end > self._keys.shape[2] or self._keys.shape[0] != batch:
            self._reserve(batch, heads, dim, end, keys.dtype)
        assert self._keys is not None and self._values is not None
        self._keys[:, :, self.length : end] = keys
        self._values[:, :, self.length : end] = values
        self.length = end
        return self._keys[:, :, :end], self._values[:, :, :end]

    def truncate(self, length: int) -> None:
        assert 0 <= length <= self.length, f"cannot truncate a cache of {self.length} to {length}"
        self.length = length

    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._keys is None or self.length == 0 else self._keys[:, :, : self.length]

    @property
    def values(self) -> torch.Tensor | None:
        return None if self._values is None or self.length == 0 else self._values[:, :, : self.length]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self._keys, self._values) if t is not None)

    def _reserve(self, batch: int, heads: int, dim: int, needed: int, dtype: torch.dtype) -> None:
        old_keys, old_values = self._keys, self._values
        capacity = max(self.initial_capacity, needed)
        if old_keys is not None and old_keys.shape[0] == batch:
            capacity = max(capacity, 2 * old_keys.shape[2])
        self._keys = torch.empty(batch, heads, capacity, dim, dtype=dtype)
        self._values = torch.empty(batch, heads, capacity, dim, dtype=dtype)
        if old_keys is not None and old_values is not None and self.length:
            assert old_keys.shape[0] == batch, "the batch of a cache cannot change mid-sequence"
            self._keys[:, :, : self.length] = old_keys[:, :, : self.length]
            self._values[:, :, : self.length] = old_values[:, :, : self.length]


@dataclass(frozen=True, slots=True)
class RaggedSequence:
    """One sequence in a ragged forward: its new rows' count, rotary tables, mask and per-layer caches."""

    count: int  # new positions of this sequence (consecutive rows of the ragged input)
    cos: torch.Tensor  # (1, 1, count, D)
    sin: torch.Tensor
    mask: torch.Tensor | None  # causal mask over (count, cached + count), None for a single position


class LeanDecoderLayer:
    """One Llama decoder layer (pre-norm attention + SwiGLU MLP) over the loaded layer's weights."""

    def __init__(self, layer: nn.Module) -> None:
        attention, mlp = layer.self_attn, layer.mlp
        self.source = layer  # the transformers layer whose weights these are
        self.head_dim = int(attention.head_dim)
        self.num_heads = attention.q_proj.out_features // self.head_dim if hasattr(attention.q_proj, "out_features") \
            else int(attention.config.num_attention_heads)
        self.num_kv_heads = int(attention.config.num_key_value_heads)
        self.scaling = float(attention.scaling)
        self.input_norm, self.post_norm = layer.input_layernorm, layer.post_attention_layernorm
        self.qkv = fuse_linears([attention.q_proj, attention.k_proj, attention.v_proj])
        self.output = projection(attention.o_proj)
        self.gate_up = fuse_linears([mlp.gate_proj, mlp.up_proj])
        self.down = projection(mlp.down_proj)
        self.activation = mlp.act_fn

    def __call__(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: LayerKVCache,
                 mask: torch.Tensor | None) -> torch.Tensor:
        query, key, value = self.qkv(_rms_norm(self.input_norm, hidden_states))  # (B, T, H*D), (B, T, KV*D) x 2
        return self._finish(hidden_states, self._attention(query, key, value, cos, sin, cache, mask))

    def ragged(self, hidden_states: torch.Tensor, sequences: list[RaggedSequence],
               caches: list[LayerKVCache]) -> torch.Tensor:
        """Several sequences' new positions side by side in (1, N, C): shared projections, attention apart
        (`caches`: this layer's KV cache of each sequence).

        The projections and the MLP (every weight byte of the layer) run once over all N rows; only
        attention, which reads each sequence's own KV cache, runs per sequence.
        """
        query, key, value = self.qkv(_rms_norm(self.input_norm, hidden_states))  # (1, N, ...)
        attended, offset = [], 0
        for sequence, cache in zip(sequences, caches, strict=True):
            rows = slice(offset, offset + sequence.count)
            attended.append(self._attention(query[:, rows], key[:, rows], value[:, rows], sequence.cos, sequence.sin,
                                            cache, sequence.mask))
            offset += sequence.count
        assert offset == hidden_states.shape[1], f"sequences cover {offset} of {hidden_states.shape[1]} rows"
        return self._finish(hidden_states, torch.cat(attended, dim=1))

    def _attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor, cache: LayerKVCache, mask: torch.Tensor | None) -> torch.Tensor:
        """Projected (B, T, .) query/key/value of new positions -> (B, T, H*D) attended, keys/values cached."""
        batch, count, _ = query.shape
        query = query.reshape(batch, count, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        key = key.reshape(batch, count, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, D)
        value = value.reshape(batch, count, self.num_kv_heads, self.head_dim).transpose(1, 2)
        query = query * cos + rotate_half(query) * sin
        key = key * cos + rotate_half(key) * sin
        keys, values = cache.append(key, value)  # (B, KV, S, D)
        if count == 1 and mask is None:
            attended = self._attend_one(query, keys, values)
        else:
            attended = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=self.scaling,
                                                      enable_gqa=self.num_kv_heads != self.num_heads)  # (B, H, T, D)
        return attended.transpose(1, 2).reshape(batch, count, -1)

    def _finish(self, hidden_states: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Output projection, residual, then the SwiGLU MLP and its residual."""
        hidden_states = hidden_states + self.output(attended)
        gate, up = self.gate_up(_rms_norm(self.post_norm, hidden_states))
        return hidden_states + self.down(self.activation(gate) * up)

    def _attend_one(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """One new position: two small matmuls per kv head group. CPU SDPA costs ~0.5 ms a call at this size."""
        batch, groups = query.shape[0], self.num_heads // self.num_kv_heads
        grouped = query.reshape(batch, self.num_kv_heads, groups, self.head_dim)  # (B, KV, G, D): heads of a group share k/v
        scores = torch.matmul(grouped, keys.transpose(-1, -2)) * self.scaling  # (B, KV, G, S)
        weights = torch.softmax(scores.float(), dim=-1).to(values.dtype)
        return torch.matmul(weights, values).reshape(batch, self.num_heads, 1, self.head_dim)  # (B, H, 1, D)


def _rms_norm(norm: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """transformers' LlamaRMSNorm exactly: normalise in float32, cast back, then scale."""
    normalised = F.rms_norm(hidden_states.float(), (hidden_states.shape[-1],), eps=norm.variance_epsilon)
    return norm.weight * normalised.to(hidden_states.dtype)
