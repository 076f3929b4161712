"""Resources while a task runs: a background sampler of `runtime.resources` snapshots and their summary.

Each sampler has its own `CpuMeter`, so its CPU figures cover its own sampling intervals only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from statistics import fmean
from types import TracebackType

from runtime.resources import CpuMeter, ResourceSnapshot, take_snapshot

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResourceSummary:
    """Mean and maximum of the snapshots taken while a task ran."""

    samples: int
    cpu_percent_mean: float
    cpu_percent_max: float
    memory_percent_mean: float
    memory_percent_max: float
    load_avg_1m_mean: float
    load_avg_1m_max: float
    process_rss_bytes_max: int
    last: ResourceSnapshot


def summarise(snapshots: list[ResourceSnapshot]) -> ResourceSummary:
    """Mean and maximum over `snapshots`. Raises ValueError if there are none."""
    if not snapshots:
        raise ValueError("cannot summarise zero snapshots")
    cpu = [s.cpu_percent for s in snapshots]
    memory = [s.memory_percent for s in snapshots]
    load = [s.load_avg_1m for s in snapshots]
    return ResourceSummary(
        samples=len(snapshots),
        cpu_percent_mean=fmean(cpu),
        cpu_percent_max=max(cpu),
        memory_percent_mean=fmean(memory),
        memory_percent_max=max(memory),
        load_avg_1m_mean=fmean(load),
        load_avg_1m_max=max(load),
        process_rss_bytes_max=max(s.process_rss_bytes for s in snapshots),
        last=snapshots[-1],
    )


class ResourceSampler:
    """Samples resources on a background thread every `interval_s` while a task runs.

    Use as `with ResourceSampler(0.5) as sampler: run_task()`, then read `sampler.summary`. One
    sample is always taken at stop, so even a task shorter than the interval gets a reading that
    covers it. `sample` is injectable for tests; by default it is `take_snapshot` with this sampler's
    own CPU meter (started at `start()`).
    """

    def __init__(self, interval_s: float = 0.5, sample: Callable[[], ResourceSnapshot] | None = None) -> None:
        """Raises ValueError if `interval_s` is not positive."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._interval_s = interval_s
        self._sample = sample
        self._snapshots: list[ResourceSnapshot] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._summary: ResourceSummary | None = None

    def start(self) -> None:
        """Begin sampling. Raises RuntimeError if already started."""
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        if self._sample is None:
            meter = CpuMeter()
            self._sample = lambda: take_snapshot(meter)
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> ResourceSummary:
        """Stop sampling, take a last sample, and return the summary. Raises RuntimeError if not started."""
        if self._thread is None or self._sample is None:
            raise RuntimeError("sampler was never started")
        if self._summary is None:
            self._stop.set()
            self._thread.join()
            self._snapshots.append(self._sample())
            self._summary = summarise(self._snapshots)
        return self._summary

    @property
    def summary(self) -> ResourceSummary:
        """The summary after `stop()`. Raises RuntimeError before it."""
        if self._summary is None:
            raise RuntimeError("sampler has not been stopped")
        return self._summary

    def _run(self) -> None:
        assert self._sample is not None, "sampler thread started without a sample function"
        # Event.wait sleeps until the interval passes or stop() is called: no busy loop.
        while not self._stop.wait(self._interval_s):
            try:
                self._snapshots.append(self._sample())
            except Exception:
                logger.exception("resource sample failed; skipping it")

    def __enter__(self) -> ResourceSampler:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
