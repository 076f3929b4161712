"""The cloud worker's compute queue: jobs in arrival order, and batches of requests ready together.

A job with a `batch_key` is batchable: when the compute thread takes it, every later queued job with
the same key comes along, oldest first, up to `max_batch`, and they run as one batched forward.
Two kinds batch: cloud-only generations of one model (a batch not yet full first waits up to
`window_s` for more to join, then runs one forward per step; generations queued later join it
between steps, `take_joining`), and session requests (collaborative token requests and speculative
verifications of many sessions: one ragged forward, no waiting).
Jobs of one `sequence` (a session) never share a batch and keep their order.

While a generation batch runs, the thread serves the session jobs queued meanwhile between its
steps (`take_between_steps`, grouped into batches the same way), so a long generation delays a
session's request by one step, not by the whole answer. Jobs never wait on an edge, so a slow or
dead session holds nobody up; `max_batch` bounds a batch and FIFO order keeps it fair.
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
    sequence: Hashable | None = None  # jobs of one sequence (a session) never share a batch
    between_steps: bool = False  # may run between the steps of a running generation batch
    waits_to_fill: bool = True  # a batch it starts waits up to window_s for more jobs (generations)


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
            if first.waits_to_fill:
                deadline = self.clock() + self.window_s
                while self._matching(first.batch_key) < self.max_batch - 1 and self.clock() < deadline:
                    self._ready.wait(max(0.0, deadline - self.clock()))
            batches, self._jobs = _gather(self._jobs, self.max_batch, lambda job: job.batch_key == first.batch_key,
                                          start=[first])
            return batches[0]

    def take_between_steps(self) -> list[list[Job]]:
        """Every queued job that may run between steps, oldest first, batched by key (see the module doc)."""
        with self._ready:
            batches, self._jobs = _gather(self._jobs, self.max_batch, lambda job: job.between_steps)
            return batches

    def take_joining(self, key: Hashable, limit: int) -> list[Job]:
        """Queued jobs with `key` that may join a batch already running, oldest first, up to `limit`.

        Only jobs queued before the first one that has to wait for the batch to end (another key, an
        unbatched job, a stop) join: a batch that keeps taking newcomers must not starve older work.
        """
        with self._ready:
            joining: list[Job] = []
            rest: deque[Job | None] = deque()
            blocked = False
            for job in self._jobs:
                if not blocked and job is not None and job.batch_key == key and len(joining) < limit:
                    joining.append(job)
                    continue
                rest.append(job)
                blocked = blocked or job is None or (job.batch_key != key and not job.between_steps)
            self._jobs = rest
            return joining

    def _matching(self, key: Hashable) -> int:
        return sum(1 for job in self._jobs if job is not None and job.batch_key == key)

    def qsize(self) -> int:
        with self._ready:
            return sum(1 for job in self._jobs if job is not None)


def _gather(jobs: deque[Job | None], max_batch: int, wanted: Callable[[Job], bool],
            start: list[Job] | None = None) -> tuple[list[list[Job]], deque[Job | None]]:
    """Split queued jobs into batches of the wanted ones and the rest (order kept in both).

    An unbatched job is a batch of its own; a batchable one joins the open batch of its key unless it
    is full or already holds a job of the same sequence, and then stays queued, as does every later
    job of that sequence (so a sequence's jobs keep their order). `start` opens the first batch.
    """
    batches: list[list[Job]] = [start] if start else []
    open_batches: dict[Hashable, list[Job]] = {start[0].batch_key: start} if start else {}
    held: set[Hashable] = set()  # sequences with a job left queued
    rest: deque[Job | None] = deque()
    for job in jobs:
        batch = None if job is None or job.batch_key is None else open_batches.get(job.batch_key)
        stays = (job is None or not wanted(job) or job.sequence in held
                 or (batch is not None and (len(batch) >= max_batch
                                            or any(j.sequence is not None and j.sequence == job.sequence for j in batch))))
        if stays:
            rest.append(job)
            if job is not None and job.sequence is not None:
                held.add(job.sequence)
        elif job.batch_key is None:
            batches.append([job])
        elif batch is None:
            open_batches[job.batch_key] = [job]
            batches.append(open_batches[job.batch_key])
        else:
            batch.append(job)
    return batches, rest
