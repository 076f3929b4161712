"""The leaderboard over benchmark cells: ranking and the quality / cloud-share Pareto front."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Entry:
    name: str  # the cell's key
    quality_ratio: float  # higher is better
    cloud_query_ratio: float  # lower is better


def pareto_front(entries: Sequence[Entry]) -> set[str]:
    """Names of the entries no other entry beats on both axes (at least as good on both, better on one)."""
    front = set()
    for entry in entries:
        dominated = any(
            other.quality_ratio >= entry.quality_ratio and other.cloud_query_ratio <= entry.cloud_query_ratio
            and (other.quality_ratio > entry.quality_ratio or other.cloud_query_ratio < entry.cloud_query_ratio)
            for other in entries)
        if not dominated:
            front.add(entry.name)
    return front


def rank(entries: Sequence[Entry]) -> list[Entry]:
    """Best quality first; among equal quality, fewer cloud queries first; then by name (stable output)."""
    return sorted(entries, key=lambda e: (-round(e.quality_ratio, 6), e.cloud_query_ratio, e.name))
