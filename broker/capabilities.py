"""What a node announces about itself in its birth: cores, memory and a quick matmul GFLOPS figure."""

from __future__ import annotations

import logging
import os
import time

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


def measure_capabilities(http_url: str = "", bandwidth_mbps: float = 0.0) -> Capabilities:
    """Capabilities announced in the node's birth."""
    return Capabilities(
        cores=os.cpu_count() or 1,
        memory_bytes=psutil.virtual_memory().total,
        gflops=round(measure_gflops(), 2),
        bandwidth_mbps=bandwidth_mbps,
        http_url=http_url,
    )
