"""The task set cut into a router-training part and a disjoint held-out part, the same on every run.

Within each task type, tasks are ordered by a seeded hash of their id and every `1 / heldout_share`-th
goes to the held-out part: a stratified split that does not depend on file order or on the machine.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TaskSplit:
    train: tuple[int, ...]  # task ids the miner learns from
    heldout: tuple[int, ...]  # task ids only the benchmark job evaluates on


def _order_key(task_id: int, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{task_id}".encode()).hexdigest()


def split_tasks(tasks: Sequence[tuple[int, int]], heldout_share: float = 0.3, seed: int = 17) -> TaskSplit:
    """(task id, task type) pairs -> a stratified split. Raises ValueError for a share outside (0, 1) or repeated ids."""
    if not 0.0 < heldout_share < 1.0:
        raise ValueError(f"heldout_share {heldout_share} must be in (0, 1)")
    ids = [task_id for task_id, _ in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("task ids repeat")
    train: list[int] = []
    heldout: list[int] = []
    for task_type in sorted({task_type for _, task_type in tasks}):
        ordered = sorted((task_id for task_id, t in tasks if t == task_type), key=lambda i: _order_key(i, seed))
        count = round(len(ordered) * heldout_share)
        heldout += ordered[:count]
        train += ordered[count:]
    return TaskSplit(tuple(sorted(train)), tuple(sorted(heldout)))


def take_per_type(task_ids: Sequence[int], types: dict[int, int], per_type: int) -> tuple[int, ...]:
    """The first `per_type` ids of each type in `task_ids`' order (a smaller job over the same part)."""
    taken: list[int] = []
    counts: dict[int, int] = {}
    for task_id in task_ids:
        task_type = types[task_id]
        if counts.get(task_type, 0) < per_type:
            counts[task_type] = counts.get(task_type, 0) + 1
            taken.append(task_id)
    return tuple(taken)
