"""Cloud cost accounting: CPU time, layer passes and generated tokens per collaboration mode.

The worker's compute thread wraps every job in `measure(mode)`; a job that serves other jobs
between its steps (a batched generation letting token requests through) has their time taken out
of its own, so each CPU second is counted once. `layer_passes` counts decoder layers run per
forward call (a batched forward over n positions or sequences is one pass of each layer: on a CPU
it costs about as much as one row); `layer_rows` counts layers x positions. The heartbeat carries
`cost_<mode>_<figure>` counters; per-token cost is their ratio to `cost_<mode>_tokens`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

logger = logging.getLogger(__name__)

COST_MODES = ("cloud_only", "collaborative", "speculative", "naive_split")


@dataclass
class ModeCost:
    tokens: int = 0  # tokens the cloud decided (accepted drafts count: the verifier decided them)
    cpu_s: float = 0.0  # compute-thread CPU seconds
    layer_passes: float = 0.0  # decoder layers x forward calls (a call shared by n requests: 1/n each)
    layer_rows: int = 0  # decoder layers x positions pushed through them


class CostAccount:
    """Per-mode cost counters of one worker. Thread-safe; `measure` is for the compute thread."""

    def __init__(self, cpu_clock: Callable[[], float] = time.thread_time) -> None:
        self.cpu_clock = cpu_clock
        self._costs = {mode: ModeCost() for mode in COST_MODES}
        self._lock = threading.Lock()
        self._paused_s: list[float] = []  # per open measure: CPU time of measures nested inside it

    @contextmanager
    def measure(self, mode: str | Mapping[str, float]) -> Iterator[None]:
        """Count the CPU time of the block to `mode`, minus that of measures nested in it.

        A mapping of modes to weights splits the time among them (a forward shared by several modes'
        requests, weighted by the rows each pushed through it).
        """
        shares = {mode: 1.0} if isinstance(mode, str) else dict(mode)
        assert shares and all(weight >= 0 for weight in shares.values()), f"bad shares {shares}"
        started = self.cpu_clock()
        self._paused_s.append(0.0)
        try:
            yield
        finally:
            elapsed = self.cpu_clock() - started
            nested = self._paused_s.pop()
            if self._paused_s:
                self._paused_s[-1] += elapsed
            total = sum(shares.values()) or 1.0
            with self._lock:
                for name, weight in shares.items():
                    self._costs[name].cpu_s += (elapsed - nested) * weight / total

    def add(self, mode: str, *, tokens: int = 0, layer_passes: float = 0, layer_rows: int = 0) -> None:
        with self._lock:
            cost = self._costs[mode]
            cost.tokens += tokens
            cost.layer_passes += layer_passes
            cost.layer_rows += layer_rows

    def figures(self) -> dict[str, float]:
        """Heartbeat counters: cost_<mode>_tokens, _cpu_ms, _layer_passes, _layer_rows."""
        with self._lock:
            figures: dict[str, float] = {}
            for mode, cost in self._costs.items():
                figures[f"cost_{mode}_tokens"] = float(cost.tokens)
                figures[f"cost_{mode}_cpu_ms"] = round(cost.cpu_s * 1e3, 3)
                figures[f"cost_{mode}_layer_passes"] = float(cost.layer_passes)
                figures[f"cost_{mode}_layer_rows"] = float(cost.layer_rows)
            return figures


def per_token(figures: dict[str, float], mode: str) -> dict[str, float | None]:
    """CPU ms and layer passes per token of `mode` from heartbeat counters (None before its first token)."""
    tokens = figures.get(f"cost_{mode}_tokens", 0.0)
    if not tokens:
        return {"cpu_ms_per_token": None, "layer_passes_per_token": None}
    return {"cpu_ms_per_token": figures.get(f"cost_{mode}_cpu_ms", 0.0) / tokens,
            "layer_passes_per_token": figures.get(f"cost_{mode}_layer_passes", 0.0) / tokens}
