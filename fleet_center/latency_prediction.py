"""What the center expects a task to cost before it runs: tokens it will generate, and a cloud worker's queue (pure).

Greedy decoding is deterministic: a task item the fleet has answered before will generate about as
many tokens again, so the learned count of that item beats any per-type guess. The scheduler plans
the cloud as if it never queued (DESIGN.md: workers scale out); the recorded prediction for a cloud
task is what will actually happen: a worker runs its tasks one after another.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)


def planned_tokens(task_id: int, task_type: int, fallback: int, by_task: Mapping[int, float],
                   by_type: Mapping[int, float]) -> int:
    """Generated tokens to plan a task with: this item's learned count, else its type's, else `fallback`."""
    learned = by_task.get(task_id, by_type.get(task_type))
    return max(1, round(learned)) if learned is not None else max(1, fallback)


def cloud_queue_latencies(items: Sequence[tuple[str, str, float]], overhead_s: float,
                          backlog_s: Mapping[str, float]) -> dict[str, float]:
    """Dispatch-to-result seconds of cloud tasks given as (instance id, worker, processing s) in dispatch order.

    A worker starts on what it already holds (`backlog_s`), then runs these in order; each result also
    pays the fixed `overhead_s` (messages, loading, parsing).
    """
    clock: dict[str, float] = dict(backlog_s)
    latencies = {}
    for instance_id, worker, processing_s in items:
        clock[worker] = clock.get(worker, 0.0) + processing_s
        latencies[instance_id] = overhead_s + clock[worker]
    return latencies
