"""Collaborative-inference messages (CE-CoLLM): context upload chunks of hidden states, and token replies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from broker.messages.codec import Message, require

HiddenDtype = Literal["fp16", "fp32"]
_DTYPE_BYTES = {"fp16": 2, "fp32": 4}


@dataclass(frozen=True, slots=True)
class ContextChunk(Message):
    """Edge → cloud on `infer/{edge}/{session}/up`: hidden states of `count` consecutive positions."""

    TAG = "context_chunk"
    MAX_BYTES = 16 * 1024 * 1024
    session_id: str
    seq: int  # chunk sequence number within the session, from 0, for gap detection
    first_position: int
    count: int
    hidden_size: int
    data: bytes  # row-major (count, hidden_size) little-endian floats of `dtype`
    dtype: HiddenDtype = "fp16"
    sent_at_ns: int = 0  # sender's wall clock, for latency figures

    def __post_init__(self) -> None:
        require(0 < len(self.session_id) <= 64, "session_id must be 1-64 chars")
        require(self.seq >= 0, "seq must be >= 0")
        require(self.first_position >= 0, "first_position must be >= 0")
        require(1 <= self.count <= 65536, "count must be 1-65536")
        require(1 <= self.hidden_size <= 65536, "hidden_size must be 1-65536")
        expected = self.count * self.hidden_size * _DTYPE_BYTES[self.dtype]
        require(len(self.data) == expected, f"data is {len(self.data)} B, expected {expected} B for its shape")
