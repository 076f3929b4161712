"""The cloud worker's compute queue: jobs in arrival order, and batches of generation requests ready together.

A job with a `batch_key` (cloud-only generation of one model) is batchable: when the compute thread
takes it, it waits up to `window_s` for the batch to fill, then every later queued job with the same
key comes along, oldest first, up to `max_batch`, and they run as one batched forward per step. While a batch runs, the thread serves the unbatched
jobs queued meanwhile (session token requests, verifications, opens) between its steps
(`take_unbatched`), so a long generation delays a session's request by one step, not by the
whole answer. Jobs never wait on an edge, so a slow or dead session holds nobody up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    run: Callable[[], None] | None = None  # an unbatched job's work
    batch_key: Hashable | None = None  # batchable: jobs with an equal key may run as one batch
    payload: Any = None  # a batchable job's request


class WorkQueue:
    """FIFO of jobs; `take` returns the oldest job, with the queued jobs it can batch with."""

    def __init__(self, max_batch: int, window_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        assert max_batch >= 1, "max_batch must be >= 1"
        assert window_s >= 0, "window_s must be >= 0"
        self.max_batch = max_batch
        self.window_s = window_s  # a batch not yet full waits this long for more requests to join
        self.clock = clock
        self._jobs: deque[Job | None] = deque()
        self._ready = threading.Condition()

    def put(self, job: Job | None) -> None:
        """Queue a job; None wakes the taker to stop."""
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()

    def take(self, timeout_s: float) -> list[Job] | None:
        """The oldest job and (if batchable) later jobs with its key, up to max_batch; [] on timeout, None to stop."""
        with self._ready:
            if not self._jobs and not self._ready.wait_for(lambda: bool(self._jobs), timeout_s):
                return []
            first = self._jobs.popleft()
            if first is None:
                return None
            if first.batch_key is None:
                return [first]
            deadline = self.clock() + self.window_s
            while self._matching(first.batch_key) < self.max_batch - 1 and self.clock() < deadline:
                self._ready.wait(max(0.0, deadline - self.clock()))
            batch, rest = [first], deque[Job | None]()
            while self._jobs:
                job = self._jobs.popleft()
                if len(batch) < self.max_batch and job is not None and job.batch_key == first.batch_key:
                    batch.append(job)
                else:
                    rest.append(job)
            self._jobs = rest
            return batch

    def take_unbatched(self) -> list[Job]:
        """Every queued unbatched job, oldest first (served between the steps of a running batch)."""
        with self._ready:
            taken = [job for job in self._jobs if job is not None and job.batch_key is None]
            self._jobs = deque(job for job in self._jobs if job is None or job.batch_key is not None)
            return taken

    def _matching(self, key: Hashable) -> int:
        return sum(1 for job in self._jobs if job is not None and job.batch_key == key)

    def qsize(self) -> int:
        with self._ready:
            return sum(1 for job in self._jobs if job is not None)
