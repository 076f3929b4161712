"""What a node reads about its machine with psutil: CPU, memory, load average, its own RSS.

Heartbeats (every node), the center's own metrics and the edge's per-task sampler all read here.
CPU percent is measured from `psutil.cpu_times()` deltas kept by each `CpuMeter`, not with
`psutil.cpu_percent()`, whose module-wide "since the last call" state would be shared by every reader
in the process and give each of them arbitrary windows.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import psutil


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
