"""Pure round bookkeeping: which rounds cache models, which tasks are overdue, what to predict from."""

from __future__ import annotations

from dataclasses import dataclass

from models.prompts import TaskType


def is_caching_round(round_index: int, offloading_rounds: int) -> bool:
    """Rounds 0..n-1 offload, round n caches, then again: every (n+1)-th round is a caching round."""
    return (round_index + 1) % (offloading_rounds + 1) == 0


def task_type_name(task_type: int) -> str:
    return TaskType(task_type).name


@dataclass(frozen=True, slots=True)
class Outstanding:
    """A dispatched task the center waits for."""

    instance_id: str
    node_id: str
    model_id: str
    deadline: float
    attempts: int
    dispatched_at: float = 0.0  # wall clock, seconds
    predicted_s: float | None = None  # the scheduler's dispatch-to-result latency


def overdue(outstanding: dict[str, Outstanding], now: float, online: set[str]) -> list[Outstanding]:
    """Tasks whose node went offline or whose deadline passed: they must be reassigned."""
    return [item for item in outstanding.values() if item.node_id not in online or now >= item.deadline]


def prediction_error_pct(predicted_s: float, measured_s: float) -> float:
    """|predicted - measured| / measured, in percent."""
    return abs(predicted_s - measured_s) / max(measured_s, 1e-9) * 100.0


def reassignment_target(failed_node: str, candidates: list[str]) -> str | None:
    """Another node for a failed task: the first candidate that is not the node that failed it."""
    others = [node for node in candidates if node != failed_node]
    return others[0] if others else None
