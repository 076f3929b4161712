"""Validation of uploaded hidden states: shape, position range and finiteness, with a reason for each refusal."""

from __future__ import annotations

import logging

import numpy as np

from broker.messages.hidden_rows import decode_rows
from broker.messages.inference import ContextChunk, NaiveStep

logger = logging.getLogger(__name__)


class ChunkError(ValueError):
    """Hidden states the cloud refuses; the message is the reason sent back to the edge."""


def chunk_rows(chunk: ContextChunk | NaiveStep, hidden_size: int, max_positions: int) -> np.ndarray:
    """The chunk's rows as a (count, hidden_size) array. Raises ChunkError naming what is wrong."""
    if chunk.hidden_size != hidden_size:
        raise ChunkError(f"hidden_size {chunk.hidden_size} differs from the model's {hidden_size}")
    first = chunk.first_position if isinstance(chunk, ContextChunk) else 0
    if first + chunk.count > max_positions:
        raise ChunkError(f"positions [{first}, {first + chunk.count}) beyond the limit of {max_positions}")
    try:
        rows = decode_rows(chunk.data, chunk.count, hidden_size, chunk.dtype)  # int8 arrives dequantized
    except ValueError as error:
        raise ChunkError(str(error)) from None
    if not np.isfinite(rows).all():
        bad = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
        raise ChunkError(f"position {first + bad} holds NaN or infinity")
    return rows
