"""Resource readings with psutil: one snapshot for heartbeats, and a sampler that summarises a task.

CPU percent is measured from `psutil.cpu_times()` deltas kept by each `CpuMeter`, not with
`psutil.cpu_percent()`, whose module-wide "since the last call" state would be shared by the heartbeat
and every task sampler and give each of them arbitrary windows.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import fmean
from types import TracebackType

import psutil

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResourceSnapshot:
    """Machine and process resources at one moment."""

    taken_at: float  # wall clock, seconds since the epoch
    cpu_percent: float  # all cores, 0-100, over the interval since the meter's previous reading
    memory_used_bytes: int  # total - available, the memory others cannot have
    memory_total_bytes: int
    memory_percent: float  # 0-100, as psutil computes it from available memory
    load_avg_1m: float
    load_avg_5m: float
    load_avg_15m: float
    process_rss_bytes: int  # resident memory of this process


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


class CpuMeter:
    """CPU busy percent over the interval between successive `read()` calls of this meter."""

    def __init__(self) -> None:
        self._last = psutil.cpu_times()

    def read(self) -> float:
        """Percent of all cores busy since the previous read (or construction); 0.0 for no elapsed time."""
        now = psutil.cpu_times()
        previous, self._last = self._last, now
        total = _total_time(now) - _total_time(previous)
        busy = _busy_time(now) - _busy_time(previous)
        if total <= 0:
            return 0.0
        return min(100.0, max(0.0, 100.0 * busy / total))


def _total_time(times: object) -> float:
    # Linux counts guest time inside user time already; psutil subtracts it the same way.
    total = sum(times)  # type: ignore[call-overload]
    return total - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _busy_time(times: object) -> float:
    return _total_time(times) - times.idle - getattr(times, "iowait", 0.0)  # type: ignore[attr-defined]


_default_meter_lock = threading.Lock()
_default_meter: CpuMeter | None = None


def take_snapshot(cpu_meter: CpuMeter | None = None) -> ResourceSnapshot:
    """Read CPU, memory, load average and this process's RSS now; never blocks.

    Without `cpu_meter`, CPU percent is measured since the previous call of this function in the
    process (0.0 on the first call).
    """
    global _default_meter
    if cpu_meter is None:
        with _default_meter_lock:
            if _default_meter is None:
                _default_meter = CpuMeter()
            cpu_meter = _default_meter
    memory = psutil.virtual_memory()
    load_1m, load_5m, load_15m = psutil.getloadavg()
    return ResourceSnapshot(
        taken_at=time.time(),
        cpu_percent=cpu_meter.read(),
        memory_used_bytes=int(memory.total - memory.available),
        memory_total_bytes=int(memory.total),
        memory_percent=float(memory.percent),
        load_avg_1m=load_1m,
        load_avg_5m=load_5m,
        load_avg_15m=load_15m,
        process_rss_bytes=int(psutil.Process(os.getpid()).memory_info().rss),
    )


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
