"""A stage's layers and their KV caches: build a range on the decoding core, export and import one layer's keys/values.

Node code that runs the model (torch is imported here, as in the edge and cloud nodes).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from broker.messages.pipeline import KvChunk
from models.decoding import LayerStack
from models.loaded import LoadedModel

logger = logging.getLogger(__name__)


def layer_caches(stack: LayerStack) -> list:
    """The per-layer KV caches of the stack in layer order (a stage's stack has no exits, so one segment)."""
    return [cache for segment in stack.segments for cache in segment.cache.layers]


def export_layer(stack: LayerStack, layer: int, run_id: str, epoch: int) -> KvChunk:
    """Keys/values of global layer `layer` for every cached position, as a bus message (float32, exact)."""
    assert stack.start <= layer < stack.end, f"layer {layer} outside [{stack.start}, {stack.end})"
    cache = layer_caches(stack)[layer - stack.start]
    positions = stack.completed
    keys, values = cache.keys, cache.values  # (1, KV, S, D) or None when empty
    if keys is None or values is None:
        heads, dim = 1, 1
        empty = b""
        return KvChunk(run_id, epoch, layer, 0, heads, dim, empty, empty)
    assert keys.shape[0] == 1, "pipeline stages run one sequence"
    _, heads, length, dim = keys.shape
    assert length == positions, f"layer {layer} caches {length} positions, the stack {positions}"
    return KvChunk(run_id, epoch, layer, positions, heads, dim,
                   keys.float().contiguous().numpy().tobytes(), values.float().contiguous().numpy().tobytes())


def import_layer(stack: LayerStack, chunk: KvChunk) -> None:
    """Put a received layer's keys/values into the (empty) cache of that layer. Raises ValueError on a mismatch."""
    if not stack.start <= chunk.layer < stack.end:
        raise ValueError(f"kv for layer {chunk.layer} outside this stage's [{stack.start}, {stack.end})")
    cache = layer_caches(stack)[chunk.layer - stack.start]
    if cache.length != 0:
        raise ValueError(f"layer {chunk.layer} already holds {cache.length} positions")
    if chunk.positions == 0:
        return
    shape = (1, chunk.kv_heads, chunk.positions, chunk.head_dim)
    dtype = stack.model.dtype
    keys = torch.from_numpy(np.frombuffer(chunk.keys, dtype="<f4").reshape(shape).copy()).to(dtype)
    values = torch.from_numpy(np.frombuffer(chunk.values, dtype="<f4").reshape(shape).copy()).to(dtype)
    cache.append(keys, values)


def copy_layer(source: LayerStack, target: LayerStack, layer: int) -> None:
    """Hand a layer's keys/values from the old stack of this stage to its new one (same process, no copy over the bus)."""
    keys = layer_caches(source)[layer - source.start].keys
    values = layer_caches(source)[layer - source.start].values
    if keys is not None and values is not None:
        layer_caches(target)[layer - target.start].append(keys, values)


def cached_positions(stack: LayerStack) -> int | None:
    """Positions every layer of the stack holds, or None while layers disagree (pieces still missing)."""
    lengths = {cache.length for cache in layer_caches(stack)}
    return lengths.pop() if len(lengths) == 1 else None


def new_stack(model: LoadedModel, start: int, end: int) -> LayerStack:
    """Layers [start, end) of the loaded model on the decoding core, with fresh caches."""
    return LayerStack(model, start, end)


def states_to_bytes(hidden_states: torch.Tensor) -> bytes:
    """(1, n, C) states -> float32 bytes, row-major."""
    assert hidden_states.dim() == 3 and hidden_states.shape[0] == 1, f"want (1, n, C), got {tuple(hidden_states.shape)}"
    return hidden_states[0].float().contiguous().numpy().tobytes()


def states_from_bytes(data: bytes, count: int, hidden_size: int, dtype: torch.dtype) -> torch.Tensor:
    """float32 bytes -> (1, count, hidden_size) states in the model's dtype."""
    rows = np.frombuffer(data, dtype="<f4").reshape(1, count, hidden_size).copy()
    return torch.from_numpy(rows).to(dtype)
