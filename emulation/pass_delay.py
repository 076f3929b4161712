"""A slower CPU for a pipeline stage: after each pass, sleep as long as a CPU with `quota` of this one's speed would still be busy.

The cgroup quota (emulation/cpu_quota.py) lets short bursts run at full speed: a stage with one layer
runs ~0.5 ms, well inside a 25 % node's 2.5 ms of every 10 ms, and looks as fast as an unlimited one,
so measured speeds depend on how much work a node has and a reallocation policy chases its own tail.
This delay stretches every pass to its CPU time / quota, like a slower core would. The quota is read from a small
file (one number) whenever the file changes, so a benchmark can slow a running node down.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


class PassDelay:
    """Call with a pass's wall and CPU seconds; sleeps until the pass took cpu / quota of wall time.

    The CPU time (the calling thread's, which runs torch's single-threaded kernels) is what this core
    spent; a core `quota` as fast spends cpu / quota. Time the pass waited for the CPU (other
    processes on the host) counts as part of that, so host load is not multiplied by 1 / quota.
    """

    def __init__(self, quota_file: Path | str, sleep: Callable[[float], None] = time.sleep) -> None:
        self.quota_file = Path(quota_file)
        self.sleep = sleep
        self.quota = 1.0
        self._mtime_ns = -1
        self._refresh()

    def _refresh(self) -> None:
        try:
            mtime_ns = os.stat(self.quota_file).st_mtime_ns
            if mtime_ns == self._mtime_ns:
                return
            self._mtime_ns = mtime_ns
            quota = float(self.quota_file.read_text().strip())
        except (OSError, ValueError) as error:
            logger.warning("pass delay: cannot read quota from %s (%s); keeping %.3g", self.quota_file, error, self.quota)
            return
        if quota > 0 and quota != self.quota:
            logger.info("pass delay: quota %.3g -> %.3g", self.quota, quota)
            self.quota = quota

    def __call__(self, wall_s: float, cpu_s: float) -> None:
        self._refresh()
        if self.quota < 1.0:
            remaining_s = cpu_s / self.quota - wall_s
            if remaining_s > 0:
                self.sleep(remaining_s)


def write_quota(quota_file: Path | str, quota: float) -> None:
    """Set the quota a running PassDelay reads (atomically: written aside, then renamed)."""
    path = Path(quota_file)
    staging = path.with_suffix(".tmp")
    staging.write_text(f"{quota}\n")
    staging.replace(path)
