"""A bounded priority queue of tasks with per-task deadlines that refuses loudly and never drops.

A full queue raises `QueueFullError` with the reason; a task whose deadline passed while queued is
handed to the consumer marked `expired` (ahead of live work) so it still gets a result.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

P = TypeVar("P")


class QueueError(Exception):
    """Root of every error raised by the task queue."""


class QueueFullError(QueueError):
    """The queue is at capacity; the task was not accepted."""

    def __init__(self, task_id: str, capacity: int) -> None:
        super().__init__(f"task {task_id!r} refused: queue full ({capacity} of {capacity} tasks waiting)")
        self.task_id = task_id
        self.capacity = capacity


class DuplicateTaskError(QueueError):
    """A task with the same id is already waiting (e.g. a QoS 1 redelivery)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} refused: already queued")
        self.task_id = task_id


class QueueClosedError(QueueError):
    """The queue was closed: no more puts, and gets raise once it is empty."""


@dataclass(frozen=True, slots=True)
class QueuedTask(Generic[P]):
    """One task as the queue holds it (times are the queue clock's seconds)."""

    task_id: str
    payload: P
    priority: int  # larger runs first; equal priorities run in arrival order
    enqueued_at: float
    deadline_at: float | None  # None = no deadline


@dataclass(frozen=True, slots=True)
class Dequeued(Generic[P]):
    """A task handed to the consumer; `expired` ones must be answered with status `expired`, not run."""

    task: QueuedTask[P]
    expired: bool
    queue_wait_s: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Depth and counters since the queue was created."""

    depth: int
    capacity: int
    accepted: int
    refused_full: int
    refused_duplicate: int
    dequeued: int  # handed out live
    expired: int  # handed out expired


class TaskQueue(Generic[P]):
    """Thread-safe bounded priority queue; `clock` measures waits and deadlines."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        """Raises ValueError if `capacity` < 1."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._clock = clock
        self._heap: list[tuple[int, int, QueuedTask[P]]] = []  # (-priority, arrival, task)
        self._arrivals = itertools.count()
        self._closed = False
        self._condition = threading.Condition()
        self._accepted = self._refused_full = self._refused_duplicate = self._dequeued = self._expired = 0

    def put(
        self, task_id: str, payload: P, *, priority: int = 0, ttl_s: float | None = None
    ) -> QueuedTask[P]:
        """Enqueue a task that expires `ttl_s` seconds from now (None = never).

        Raises QueueFullError, DuplicateTaskError, QueueClosedError.
        """
        with self._condition:
            if self._closed:
                raise QueueClosedError(f"task {task_id!r} refused: queue closed")
            if any(queued.task_id == task_id for _, _, queued in self._heap):
                self._refused_duplicate += 1
                raise DuplicateTaskError(task_id)
            if len(self._heap) >= self._capacity:
                self._refused_full += 1
                logger.warning("task %s refused: queue full (%d)", task_id, self._capacity)
                raise QueueFullError(task_id, self._capacity)
            now = self._clock()
            task = QueuedTask(
                task_id=task_id,
                payload=payload,
                priority=priority,
                enqueued_at=now,
                deadline_at=None if ttl_s is None else now + ttl_s,
            )
            heapq.heappush(self._heap, (-priority, next(self._arrivals), task))
            self._accepted += 1
            self._condition.notify()
            return task

    def get(self, timeout_s: float) -> Dequeued[P] | None:
        """The next task: any expired one first (earliest deadline), else the highest priority.

        Blocks up to `timeout_s` real seconds (0 = do not block); returns None on timeout.
        Raises QueueClosedError once the queue is closed and empty.
        """
        with self._condition:
            if not self._condition.wait_for(lambda: self._heap or self._closed, timeout=timeout_s):
                return None
            if not self._heap:
                raise QueueClosedError("queue closed")
            now = self._clock()
            expired = self._expired_indices(now)
            if expired:
                index = min(expired, key=lambda i: self._heap[i][2].deadline_at or 0.0)
                task = self._pop_at(index)
                self._expired += 1
            else:
                task = heapq.heappop(self._heap)[2]
                self._dequeued += 1
            return Dequeued(task=task, expired=bool(expired), queue_wait_s=now - task.enqueued_at)

    def drain_expired(self) -> list[Dequeued[P]]:
        """Remove and return every task whose deadline has passed (for a timer that answers them)."""
        with self._condition:
            now = self._clock()
            tasks = [self._heap[i][2] for i in self._expired_indices(now)]
            expired_ids = {task.task_id for task in tasks}
            self._heap = [item for item in self._heap if item[2].task_id not in expired_ids]
            heapq.heapify(self._heap)
            self._expired += len(tasks)
        tasks.sort(key=lambda task: task.deadline_at or 0.0)
        return [Dequeued(task=task, expired=True, queue_wait_s=now - task.enqueued_at) for task in tasks]

    def close(self) -> None:
        """Refuse further puts and wake blocked getters; tasks already queued can still be taken."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def depth(self) -> int:
        with self._condition:
            return len(self._heap)

    def __len__(self) -> int:
        return self.depth

    def stats(self) -> QueueStats:
        with self._condition:
            return QueueStats(
                depth=len(self._heap),
                capacity=self._capacity,
                accepted=self._accepted,
                refused_full=self._refused_full,
                refused_duplicate=self._refused_duplicate,
                dequeued=self._dequeued,
                expired=self._expired,
            )

    def _expired_indices(self, now: float) -> list[int]:
        return [
            index
            for index, (_, _, task) in enumerate(self._heap)
            if task.deadline_at is not None and task.deadline_at <= now
        ]

    def _pop_at(self, index: int) -> QueuedTask[P]:
        task = self._heap[index][2]
        self._heap[index] = self._heap[-1]
        self._heap.pop()
        heapq.heapify(self._heap)  # the queue is small (bounded); a re-heapify is simplest and correct
        return task
