"""Turning a split into stage assignments: ring neighbours and which layers' keys/values move where (pure)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from broker.messages.pipeline import KvPiece, StageAssign
from pipeline.allocation import Allocation

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KvMove:
    source: str
    target: str
    start: int
    end: int

    @property
    def layers(self) -> int:
        return self.end - self.start


def kv_moves(old: Allocation, new: Allocation) -> tuple[KvMove, ...]:
    """Every layer range that changes node between two splits: the old holder sends it to the new one."""
    old_ranges = dict(zip(old.node_ids, old.ranges(), strict=True))
    moves = []
    for target, (start, end) in zip(new.node_ids, new.ranges(), strict=True):
        for source, (old_start, old_end) in old_ranges.items():
            low, high = max(start, old_start), min(end, old_end)
            if source != target and low < high:
                moves.append(KvMove(source, target, low, high))
    return tuple(moves)


def assignments(allocation: Allocation, run_id: str, epoch: int, model_id: str, *, reset: bool,
                moves: tuple[KvMove, ...] = (), kv_timeout_s: float = 30.0) -> dict[str, StageAssign]:
    """One `StageAssign` per node holding layers, ring-linked in order; nodes with no layers get none."""
    ring = allocation.active()
    ranges = dict(zip(allocation.node_ids, allocation.ranges(), strict=True))
    result = {}
    for index, node in enumerate(ring):
        start, end = ranges[node]
        result[node] = StageAssign(
            run_id, epoch, model_id, start, end,
            predecessor=ring[index - 1], successor=ring[(index + 1) % len(ring)],
            first=index == 0, last=index == len(ring) - 1,
            kv_sends=tuple(KvPiece(m.target, m.start, m.end) for m in moves if m.source == node),
            kv_expected=tuple(KvPiece(m.source, m.start, m.end) for m in moves if m.target == node),
            reset=reset, kv_timeout_s=kv_timeout_s)
    return result

