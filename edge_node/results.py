"""Where task results wait for HTTP pollers: state per task id, bounded, with waiting."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Literal

from broker.messages import TaskResult

Pending = Literal["queued", "running"]


class ResultBook:
    """Task id → "queued" / "running" / TaskResult. Keeps the newest `capacity` finished results."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[str, Pending | TaskResult] = OrderedDict()
        self._changed = threading.Condition()

    def mark(self, task_id: str, state: Pending) -> None:
        with self._changed:
            self._states[task_id] = state
            self._changed.notify_all()

    def finish(self, result: TaskResult) -> None:
        with self._changed:
            self._states[result.task_id] = result
            self._states.move_to_end(result.task_id)
            finished = [k for k, v in self._states.items() if isinstance(v, TaskResult)]
            for task_id in finished[: max(0, len(finished) - self.capacity)]:
                del self._states[task_id]
            self._changed.notify_all()

    def get(self, task_id: str) -> Pending | TaskResult | None:
        with self._changed:
            return self._states.get(task_id)

    def wait(self, task_id: str, timeout_s: float) -> Pending | TaskResult | None:
        """The result once finished, or the pending state when `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                state = self._states.get(task_id)
                remaining = deadline - time.monotonic()
                if isinstance(state, TaskResult) or state is None or remaining <= 0:
                    return state
                self._changed.wait(remaining)
