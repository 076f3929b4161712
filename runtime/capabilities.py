"""What a node announces about itself: cores, memory, its host, and a matmul GFLOPS figure it keeps re-measuring.

One probe at start-up is not to be trusted: on a host where other nodes are loading models it can
read 40x low, and a center that believes it never sends that node work. `SpeedProbe` repeats the
probe (at start, spread over the first minute, then periodically) and reports the best of its recent
runs: contention only ever slows a probe down, so the best run is the closest to the node's speed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

from broker.messages.membership import Capabilities

logger = logging.getLogger(__name__)


def measure_gflops(size: int = 384, repeats: int = 3) -> float:
    """fp32 matmul throughput, best of a few runs (about 50 ms on a Pi 4, a few ms on a server)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / max(best, 1e-9) / 1e9


def host_id() -> str:
    """Names the machine (not the process): nodes that share one report the same id."""
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = ""
    return f"{socket.gethostname()}-{machine[:12]}" if machine else socket.gethostname()


def measure_capabilities(http_url: str = "", bandwidth_mbps: float = 0.0, gflops: float | None = None) -> Capabilities:
    """Capabilities announced in the node's birth."""
    return Capabilities(
        cores=os.cpu_count() or 1,
        memory_bytes=psutil.virtual_memory().total,
        gflops=round(measure_gflops() if gflops is None else gflops, 2),
        bandwidth_mbps=bandwidth_mbps,
        http_url=http_url,
        host_id=host_id(),
    )


# Seconds after start at which the probe runs in the first minute; then every `period_s`.
EARLY_PROBES_S = (0.0, 5.0, 15.0, 30.0, 60.0)


def probe_due(started_at: float, probes_done: int, last_probe_at: float, now: float, period_s: float) -> bool:
    """Pure schedule: the early probes at their offsets from start, then one every `period_s`."""
    if probes_done < len(EARLY_PROBES_S):
        return now - started_at >= EARLY_PROBES_S[probes_done]
    return now - last_probe_at >= period_s


class SpeedProbe:
    """Repeated GFLOPS probes; `gflops` is the best of the last `keep` runs. Not thread-safe: one caller."""

    def __init__(self, period_s: float = 300.0, keep: int = 6, measure: Callable[[], float] = measure_gflops,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self.measure = measure
        self.clock = clock
        self.started_at = clock()
        self.runs: deque[float] = deque(maxlen=keep)
        self.probes_done = 0
        self.last_probe_at = self.started_at

    @property
    def gflops(self) -> float:
        """Best recent figure; 0.0 before the first probe."""
        return max(self.runs, default=0.0)

    def maybe_probe(self) -> bool:
        """Run a probe if one is due; returns whether it ran."""
        now = self.clock()
        if not probe_due(self.started_at, self.probes_done, self.last_probe_at, now, self.period_s):
            return False
        self.runs.append(self.measure())
        self.probes_done += 1
        self.last_probe_at = self.clock()
        logger.debug("speed probe %d: %.1f GFLOPS (best recent %.1f)", self.probes_done, self.runs[-1], self.gflops)
        return True
