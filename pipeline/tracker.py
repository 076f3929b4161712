"""The pipeline tracker: per node, per token, what compute, sending, receiving and queueing cost.

Plain data built from the stages' `StageTiming` reports; the coordinator blends its speeds into
capabilities, the API returns its rows, the recorder writes them to InfluxDB.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass

from broker.messages.pipeline import StageTiming

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenFigures:
    """One stage's share of one pass (a token, or the prompt)."""

    node_id: str
    position: int  # first position of the pass
    count: int  # positions in the pass
    epoch: int  # assignment epoch (changes with every reallocation)
    layers: int
    compute_s: float
    head_s: float
    send_s: float
    receive_s: float
    queue_s: float

    @property
    def communication_s(self) -> float:
        return self.send_s + self.receive_s

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


class PipelineTracker:
    """Every stage's figures of one run, by position."""

    def __init__(self) -> None:
        self.figures: list[TokenFigures] = []
        self._by_position: dict[int, dict[str, TokenFigures]] = defaultdict(dict)

    def add(self, timing: StageTiming) -> TokenFigures:
        figures = TokenFigures(timing.node_id, timing.position, timing.count, timing.epoch, timing.layers,
                               timing.compute_s, timing.head_s, timing.send_s, timing.receive_s, timing.queue_s)
        self.figures.append(figures)
        self._by_position[timing.position][timing.node_id] = figures
        return figures

    def speeds_at(self, position: int) -> dict[str, float]:
        """Layers per second of compute each node measured for the single-token pass at `position`."""
        speeds = {}
        for node, figures in self._by_position.get(position, {}).items():
            if figures.count == 1 and figures.layers > 0 and figures.compute_s > 0:
                speeds[node] = figures.layers / figures.compute_s
        return speeds

    def summary(self) -> dict[str, dict[str, float]]:
        """Per node over single-token passes: tokens, mean compute / head / communication / queue ms."""
        rows: dict[str, list[TokenFigures]] = defaultdict(list)
        for figures in self.figures:
            if figures.count == 1:
                rows[figures.node_id].append(figures)
        summary = {}
        for node, items in rows.items():
            count = len(items)
            summary[node] = {
                "tokens": count,
                "compute_ms": 1e3 * sum(f.compute_s for f in items) / count,
                "head_ms": 1e3 * sum(f.head_s for f in items) / count,
                "communication_ms": 1e3 * sum(f.communication_s for f in items) / count,
                "queue_ms": 1e3 * sum(f.queue_s for f in items) / count,
            }
        return summary
