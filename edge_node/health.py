"""What `/health` answers: whether the node can serve, from plain facts about it (pure)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HealthFacts:
    bus_connected: bool
    worker_alive: bool  # the thread that runs tasks
    stopping: bool  # stop() was called: the queue takes nothing new
    queue_depth: int
    queue_capacity: int


@dataclass(frozen=True, slots=True)
class Health:
    status: str  # ok | degraded (serves HTTP, not the fleet) | unavailable
    http_status: int  # 200, or 503 when the node cannot serve
    problems: tuple[str, ...]


def assess(facts: HealthFacts) -> Health:
    """Unavailable (503) if no task can run or be queued; degraded if only the bus is down (HTTP still serves)."""
    blocking = []
    if facts.stopping:
        blocking.append("node is stopping")
    if not facts.worker_alive:
        blocking.append("task worker is not running")
    if facts.queue_depth >= facts.queue_capacity:
        blocking.append(f"queue full ({facts.queue_depth}/{facts.queue_capacity})")
    if blocking:
        return Health("unavailable", 503, tuple(blocking) + (() if facts.bus_connected else ("bus disconnected",)))
    if not facts.bus_connected:
        return Health("degraded", 200, ("bus disconnected: the center cannot reach this node",))
    return Health("ok", 200, ())
