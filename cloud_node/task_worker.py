"""Answers whole tasks the center routes to the cloud: the full model, no early exits.

Tasks arrive on `tasks/{cloud id}/dispatch` like an edge's, queue in order, and results leave on
`tasks/{cloud id}/result` with every token marked as decided by the cloud.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from broker import topics
from broker.client import BusClient, Envelope
from broker.messages import TaskDispatch, TaskResult, TaskSpec, TokenRecord
from cloud_node.model_pool import ModelPool
from models.errors import ModelStoreError
from models.runner import run_task

logger = logging.getLogger(__name__)


class CloudTaskWorker:
    """One worker thread; models stay loaded (the cloud has the memory the edges lack)."""

    def __init__(self, node_id: str, bus: BusClient, models: ModelPool, max_queue: int = 10_000) -> None:
        self.node_id = node_id
        self.bus = bus
        self.models = models  # shared with the session contexts: one copy of each model per process
        self._tasks: queue.Queue[tuple[TaskSpec, float]] = queue.Queue(max_queue)  # (task, monotonic arrival)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cloud-tasks", daemon=True)

    @property
    def queue_depth(self) -> int:
        return self._tasks.qsize()

    def attach(self) -> None:
        self.bus.subscribe(topics.TASK_DISPATCH, self._on_dispatch, node=self.node_id)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _on_dispatch(self, envelope: Envelope) -> None:
        dispatch = envelope.message
        assert isinstance(dispatch, TaskDispatch)
        for task in dispatch.tasks:
            try:
                self._tasks.put_nowait((task, time.monotonic()))
            except queue.Full:
                self._publish(self._failure(task, "refused", "cloud queue full"))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                task, arrived_at = self._tasks.get(timeout=0.5)
            except queue.Empty:
                continue
            self._publish(self.run(task, queue_wait_s=time.monotonic() - arrived_at))

    def run(self, task: TaskSpec, queue_wait_s: float = 0.0) -> TaskResult:
        """Never raises for the task's own failure: it becomes an error result."""
        if task.deadline and time.time() > task.deadline:
            return self._failure(task, "expired", f"deadline passed after {queue_wait_s:.1f} s in the cloud queue")
        started = time.perf_counter()
        try:
            model = self.models.get(task.model_id)
            load_time_s = time.perf_counter() - started
            outcome = run_task(model, task.task_type, task.prompt, task.max_new_tokens, policy=None)
        except ModelStoreError as error:
            return self._failure(task, "error", str(error))
        except Exception as error:  # one bad task must not stop the worker
            logger.exception("%s: task %s failed", self.node_id, task.task_id)
            return self._failure(task, "error", f"{type(error).__name__}: {error}")
        generation = outcome.generation
        return TaskResult(
            task_id=task.task_id, node_id=self.node_id, status="ok", model_id=task.model_id, task_type=task.task_type,
            round_id=task.round_id, answer=outcome.answer, parsed=outcome.parsed, queue_wait_s=queue_wait_s,
            load_time_s=load_time_s, ttft_s=generation.ttft_s, total_s=generation.total_s, finished_at=time.time(),
            tokens=tuple(TokenRecord(position=t.position, token_id=t.token_id, latency_ms=t.latency_ms,
                                     decided_by="cloud", layer=t.layer) for t in generation.tokens),
        )

    def _failure(self, task: TaskSpec, status: str, error: str) -> TaskResult:
        return TaskResult(task_id=task.task_id, node_id=self.node_id, status=status, model_id=task.model_id,  # type: ignore[arg-type]
                          task_type=task.task_type, round_id=task.round_id, error=error, finished_at=time.time())

    def _publish(self, result: TaskResult) -> None:
        try:
            self.bus.publish(topics.TASK_RESULT, result, node=self.node_id)
        except Exception as error:
            logger.warning("%s: could not publish result of %s: %s", self.node_id, result.task_id, error)


