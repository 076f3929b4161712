"""Model slices: embedding, decoder layers [start, end) with their own KV cache, and the head.

Chaining `EmbeddingSlice` -> `DecoderSlice(0, k)` -> `DecoderSlice(k, L)` -> `HeadSlice`
reproduces the full model; each decoder slice can live in a different process (edge / cloud).
A decoder slice runs the loaded model's own weights through lean layer math (`models/lean_layers.py`:
fused projections, a rotary table, a preallocated KV cache); `TransformersDecoderSlice` runs the same
layers through transformers' modules, the yardstick it is measured against.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from models.lean_layers import LayerKVCache, LeanDecoderLayer, RaggedSequence, rotary_table

logger = logging.getLogger(__name__)


class SliceKVCache:
    """Keys/values of layers [start, end), duck-typed as a transformers `Cache` for LlamaAttention.

    LlamaAttention calls `update(key_states, value_states, layer_idx)` and attends over the
    returned tensors; layer_idx is the global layer index, so we offset by `start`.
    """

    def __init__(self, start: int, end: int) -> None:
        assert 0 <= start < end, f"bad layer range [{start}, {end})"
        self.start = start
        self.end = end
        self.keys: list[torch.Tensor | None] = [None] * (end - start)
        self.values: list[torch.Tensor | None] = [None] * (end - start)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        slot = layer_idx - self.start
        assert 0 <= slot < len(self.keys), f"layer {layer_idx} outside cache [{self.start}, {self.end})"
        old_keys, old_values = self.keys[slot], self.values[slot]
        # (B, n_kv_heads, T, head_dim): append along T
        keys = key_states if old_keys is None else torch.cat([old_keys, key_states], dim=2)
        values = value_states if old_values is None else torch.cat([old_values, value_states], dim=2)
        self.keys[slot], self.values[slot] = keys, values
        return keys, values

    def length(self) -> int:
        """Positions cached (same for every layer after a complete forward)."""
        first = self.keys[0]
        return 0 if first is None else int(first.shape[2])

    def truncate(self, length: int) -> None:
        """Keep only the first `length` positions (speculative rollback)."""
        assert 0 <= length <= self.length(), f"cannot truncate cache of {self.length()} to {length}"
        for slot, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
            if keys is not None and values is not None:
                self.keys[slot], self.values[slot] = keys[:, :, :length], values[:, :, :length]

    def reset(self) -> None:
        self.keys = [None] * len(self.keys)
        self.values = [None] * len(self.values)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values) if t is not None)


def causal_mask(query_length: int, offset: int) -> torch.Tensor | None:
    """Boolean mask (1, 1, T, offset + T), True where query i may attend key j; None for T == 1."""
    if query_length == 1:
        return None  # a single new query attends to every cached key and itself
    query_positions = torch.arange(query_length).unsqueeze(1) + offset  # (T, 1)
    key_positions = torch.arange(offset + query_length).unsqueeze(0)  # (1, S)
    return (key_positions <= query_positions)[None, None]  # (1, 1, T, S)


def padded_causal_mask(query_length: int, offset: int, pad_lengths: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, offset + T) mask for left-padded rows: row b never attends its first pad_lengths[b] keys.

    A padding query attends to itself only: its states stay finite (a fully masked softmax gives NaN,
    and NaN values leak through later queries' zero attention weights).
    """
    query_positions = torch.arange(query_length).view(1, query_length, 1) + offset  # (1, T, 1)
    key_positions = torch.arange(offset + query_length).view(1, 1, -1)  # (1, 1, S)
    causal = key_positions <= query_positions  # (1, T, S)
    real_key = key_positions >= pad_lengths.view(-1, 1, 1)  # (B, 1, S)
    return ((causal & real_key) | (key_positions == query_positions))[:, None]  # (B, 1, T, S)


def position_ids_for(query_length: int, offset: int, pad_lengths: torch.Tensor | None) -> torch.Tensor:
    """Rotary positions (B or 1, T) of the next T positions; a left-padded row counts from its first real token."""
    positions = torch.arange(offset, offset + query_length).unsqueeze(0)  # (1, T)
    if pad_lengths is None:
        return positions
    return (positions - pad_lengths.view(-1, 1)).clamp_min(0)  # (B, T)


def continue_at(cache: SliceKVCache | LeanSliceCache, hidden_states: torch.Tensor, position: int | None,
                pad_lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Position ids and mask of (B, T, C) new states at `position` (default: the cache length, a smaller one
    truncates the cache first); `pad_lengths` (B,) marks left padding. Asserts nothing is skipped."""
    assert hidden_states.dim() == 3, f"hidden_states must be (B, T, C), got {tuple(hidden_states.shape)}"
    offset = cache.length() if position is None else position
    if offset < cache.length():
        cache.truncate(offset)
    assert offset == cache.length(), f"position {offset} skips ahead of cache length {cache.length()}"
    query_length = hidden_states.shape[1]
    padded = pad_lengths is not None and bool(pad_lengths.any())
    position_ids = position_ids_for(query_length, offset, pad_lengths if padded else None)  # (B or 1, T)
    mask = padded_causal_mask(query_length, offset, pad_lengths) if padded else causal_mask(query_length, offset)
    return position_ids, mask


class EmbeddingSlice(nn.Module):
    """Token ids (B, T) -> hidden states (B, T, C)."""

    def __init__(self, embed_tokens: nn.Module) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        assert input_ids.dim() == 2, f"input_ids must be (B, T), got {tuple(input_ids.shape)}"
        return self.embed_tokens(input_ids)  # (B, T, C)


class LeanSliceCache:
    """The per-layer preallocated caches of a lean slice, viewed like `SliceKVCache` (keys/values per layer)."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.layers = [LayerKVCache() for _ in range(end - start)]

    @property
    def keys(self) -> list[torch.Tensor | None]:
        return [cache.keys for cache in self.layers]

    @property
    def values(self) -> list[torch.Tensor | None]:
        return [cache.values for cache in self.layers]

    def length(self) -> int:
        return self.layers[0].length

    def truncate(self, length: int) -> None:
        assert 0 <= length <= self.length(), f"cannot truncate cache of {self.length()} to {length}"
        for cache in self.layers:
            cache.truncate(length)

    def reset(self) -> None:
        self.truncate(0)

    def nbytes(self) -> int:
        return sum(cache.nbytes() for cache in self.layers)


class DecoderSlice:
    """Decoder layers [start, end) with their own KV cache, on plain torch ops (`models/lean_layers.py`).

    `forward(hidden_states)` continues at position `self.length` (the cache length) unless a
    `position` is given, in which case the cache is first truncated to it. Positions drive the
    rotary embedding, so a slice started at any offset computes exactly what the full model does.
    """

    def __init__(self, layers: nn.ModuleList, rotary_emb: nn.Module, start: int, end: int) -> None:
        assert 0 <= start < end <= len(layers), f"bad slice [{start}, {end}) of {len(layers)} layers"
        self.start = start
        self.end = end
        self.layers = [LeanDecoderLayer(layer) for layer in layers[start:end]]
        self.rotary = rotary_table(rotary_emb)
        self.cache = LeanSliceCache(start, end)

    @property
    def length(self) -> int:
        """Number of positions in this slice's KV cache."""
        return self.cache.length()

    @torch.no_grad()
    def __call__(self, hidden_states: torch.Tensor, position: int | None = None,
                 pad_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Run the layers on (B, T, C) hidden states for positions [position, position + T).

        `position` defaults to the cache length; a smaller value truncates the cache first.
        `pad_lengths` (B,) marks left padding of rows in a batch of unequal prompts (None: no padding).
        """
        position_ids, mask = continue_at(self.cache, hidden_states, position, pad_lengths)
        cos, sin = self.rotary.at(position_ids, hidden_states.dtype)  # (B or 1, 1, T, D)
        for layer, cache in zip(self.layers, self.cache.layers, strict=True):
            hidden_states = layer(hidden_states, cos, sin, cache, mask)  # (B, T, C)
        return hidden_states

    forward = __call__

    def ragged_sequence(self, count: int, dtype: torch.dtype) -> RaggedSequence:
        """This slice as one sequence of `count` new positions in a ragged forward (`run_ragged`)."""
        offset = self.cache.length()
        cos, sin = self.rotary.at(position_ids_for(count, offset, None), dtype)  # (1, 1, count, D)
        return RaggedSequence(count, cos, sin, causal_mask(count, offset))

    def truncate(self, length: int) -> None:
        """Drop cached positions >= `length` (speculative rollback)."""
        self.cache.truncate(length)

    def reset(self) -> None:
        """Forget every cached position."""
        self.cache.reset()


class TransformersDecoderSlice(nn.Module):
    """Decoder layers [start, end) through transformers' own layer modules and a duck-typed cache (the yardstick).

    The decoding core runs `DecoderSlice`; this one stays to measure it against (benchmarks.decode).

    `forward(hidden_states)` continues at position `self.length` (the cache length) unless a
    `position` is given, in which case the cache is first truncated to it. Positions drive the
    rotary embedding, so a slice started at any offset computes exactly what the full model does.
    """

    def __init__(self, layers: nn.ModuleList, rotary_emb: nn.Module, start: int, end: int) -> None:
        super().__init__()
        assert 0 <= start < end <= len(layers), f"bad slice [{start}, {end}) of {len(layers)} layers"
        self.start = start
        self.end = end
        self.layers = nn.ModuleList(layers[start:end])
        self.rotary_emb = rotary_emb
        self.cache = SliceKVCache(start, end)

    @property
    def length(self) -> int:
        """Number of positions in this slice's KV cache."""
        return self.cache.length()

    @torch.no_grad()
    def forward(self, hidden_states: torch.Tensor, position: int | None = None,
                pad_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Run the layers on (B, T, C) hidden states for positions [position, position + T).

        `position` defaults to the cache length; a smaller value truncates the cache first.
        `pad_lengths` (B,) marks left padding of rows in a batch of unequal prompts (None: no padding).
        """
        position_ids, mask = continue_at(self.cache, hidden_states, position, pad_lengths)
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)  # cos, sin (B or 1, T, hd)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=self.cache,
                use_cache=True,
                position_embeddings=position_embeddings,
            )  # (B, T, C)
        return hidden_states

    def truncate(self, length: int) -> None:
        """Drop cached positions >= `length` (speculative rollback)."""
        self.cache.truncate(length)

    def reset(self) -> None:
        """Forget every cached position."""
        self.cache.reset()


class HeadSlice(nn.Module):
    """Hidden states (B, T, C) -> logits (B, T, V) in float32: [adapter], final norm, LM head.

    The optional adapter is an exit head's residual linear map h + W h, used when the slice's
    input comes from a layer before the last one (depth-truncated edge variants).
    """

    def __init__(self, norm: nn.Module, lm_head: nn.Module, adapter: nn.Module | None = None) -> None:
        super().__init__()
        self.norm = norm
        self.lm_head = lm_head
        self.adapter = adapter

    @torch.no_grad()
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        assert hidden_states.dim() == 3, f"hidden_states must be (B, T, C), got {tuple(hidden_states.shape)}"
        if self.adapter is not None:  # adapters are float32; a bf16 model's states go through and back
            adapter_dtype = next(self.adapter.parameters()).dtype
            hidden_states = self.adapter(hidden_states.to(adapter_dtype)).to(hidden_states.dtype)
        return self.lm_head(self.norm(hidden_states)).float()  # (B, T, V)


@torch.no_grad()
def run_ragged(slices: list[DecoderSlice], hidden_states: list[torch.Tensor]) -> list[torch.Tensor]:
    """Slices over the same layers, each with its own KV cache, fed their (1, n_i, C) new rows in one forward.

    The rows go side by side into one (1, sum n_i, C) input: every projection and MLP matmul reads
    its weights once for all sequences (batch-1 decoding is bound by those bytes), attention runs
    per sequence over its own cache. Each result equals what `slices[i](hidden_states[i])` returns.
    """
    assert len(slices) == len(hidden_states) and slices, "one input per slice"
    first = slices[0]
    assert all(s.layers[0].source is first.layers[0].source and s.end == first.end for s in slices), \
        "a ragged forward needs slices over the same layers"
    assert all(h.dim() == 3 and h.shape[0] == 1 for h in hidden_states), "inputs must be (1, n, C)"
    sequences = [s.ragged_sequence(h.shape[1], h.dtype) for s, h in zip(slices, hidden_states, strict=True)]
    carry = torch.cat(hidden_states, dim=1)  # (1, N, C)
    for index, layer in enumerate(first.layers):
        carry = layer.ragged(carry, sequences, [s.cache.layers[index] for s in slices])
    return list(carry.split([h.shape[1] for h in hidden_states], dim=1))
