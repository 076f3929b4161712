"""The byte layout of hidden-state rows in `ContextChunk` / `NaiveStep` payloads: fp32, fp16, or int8 + scales.

int8: each row (position) is quantized symmetrically with its own scale, max |x| / 127; the payload is
the (n, C) int8 values row-major, then n little-endian float32 scales. At hidden size 576 that is
580 B a position against 1,152 B in fp16. Rows decode to float32 (the receiver casts on).
"""

from __future__ import annotations

import logging

import numpy as np

from broker.messages.inference import INT8_SCALE_BYTES, HiddenDtype, hidden_bytes

logger = logging.getLogger(__name__)

_FLOAT_DTYPES = {"fp16": np.dtype("<f2"), "fp32": np.dtype("<f4")}


def encode_rows(rows: np.ndarray, dtype: HiddenDtype) -> bytes:
    """(n, C) float rows -> payload bytes in `dtype`."""
    assert rows.ndim == 2, f"rows must be (n, C), got {rows.shape}"
    if dtype != "int8":
        return np.ascontiguousarray(rows, dtype=_FLOAT_DTYPES[dtype]).tobytes()
    values = rows.astype(np.float32)
    scales = np.abs(values).max(axis=1) / 127.0  # (n,)
    scales = np.where(scales > 0, scales, 1.0).astype("<f4")
    quantized = np.clip(np.rint(values / scales[:, None]), -127, 127).astype(np.int8)
    return quantized.tobytes() + scales.tobytes()


def decode_rows(data: bytes, count: int, hidden_size: int, dtype: HiddenDtype) -> np.ndarray:
    """Payload bytes -> (count, hidden_size) rows (fp16 / fp32 as sent, int8 dequantized to float32).

    Raises ValueError when the size does not match the shape.
    """
    expected = hidden_bytes(count, hidden_size, dtype)
    if len(data) != expected:
        raise ValueError(f"data is {len(data)} B, expected {expected} B for ({count}, {hidden_size}) {dtype}")
    if dtype != "int8":
        return np.frombuffer(data, dtype=_FLOAT_DTYPES[dtype]).reshape(count, hidden_size)
    values_end = count * hidden_size
    quantized = np.frombuffer(data, dtype=np.int8, count=values_end).reshape(count, hidden_size)
    scales = np.frombuffer(data, dtype="<f4", offset=values_end, count=count)
    assert scales.nbytes == count * INT8_SCALE_BYTES
    return quantized.astype(np.float32) * scales[:, None]
