"""The task queue: capacity refusals, priorities, deadlines, blocking gets and counters."""

from __future__ import annotations

import threading

import pytest

from edge_node.task_queue import DuplicateTaskError, QueueClosedError, QueueFullError, TaskQueue

from .conftest import FakeClock


def make_queue(clock: FakeClock, capacity: int = 4) -> TaskQueue[str]:
    return TaskQueue(capacity, clock)


def taken_ids(queue: TaskQueue[str]) -> list[str]:
    ids = []
    while (item := queue.get(timeout_s=0)) is not None:
        ids.append(item.task.task_id)
    return ids


def test_full_queue_refuses_with_the_reason(clock: FakeClock) -> None:
    queue = make_queue(clock, capacity=1)
    queue.put("t1", "payload")
    with pytest.raises(QueueFullError, match="queue full"):
        queue.put("t2", "payload")


def test_refused_task_is_counted_and_not_queued(clock: FakeClock) -> None:
    queue = make_queue(clock, capacity=1)
    queue.put("t1", "payload")
    with pytest.raises(QueueFullError):
        queue.put("t2", "payload")
    stats = queue.stats()
    assert (stats.depth, stats.accepted, stats.refused_full) == (1, 1, 1)


def test_duplicate_task_id_is_refused_while_queued(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.put("t1", "payload")
    with pytest.raises(DuplicateTaskError):
        queue.put("t1", "payload")


def test_higher_priority_is_taken_first(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.put("low", "x", priority=0)
    queue.put("high", "x", priority=5)
    assert taken_ids(queue) == ["high", "low"]


def test_equal_priorities_are_taken_in_arrival_order(clock: FakeClock) -> None:
    queue = make_queue(clock)
    for task_id in ("a", "b", "c"):
        queue.put(task_id, "x")
    assert taken_ids(queue) == ["a", "b", "c"]


def test_task_past_its_deadline_is_returned_as_expired(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.put("t1", "payload", ttl_s=5)
    clock.advance(5)
    item = queue.get(timeout_s=0)
    assert item is not None
    assert (item.task.task_id, item.expired, item.queue_wait_s) == ("t1", True, 5)


def test_task_within_its_deadline_is_returned_live_with_its_queue_wait(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.put("t1", "payload", ttl_s=5)
    clock.advance(2)
    item = queue.get(timeout_s=0)
    assert item is not None
    assert (item.expired, item.queue_wait_s) == (False, 2)


def test_expired_task_is_handed_out_before_higher_priority_live_work(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.put("urgent", "x", priority=9)
    queue.put("stale", "x", priority=0, ttl_s=1)
    clock.advance(1)
    item = queue.get(timeout_s=0)
    assert item is not None
    assert (item.task.task_id, item.expired) == ("stale", True)


def test_drain_expired_returns_every_expired_task_and_keeps_live_ones(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.put("late", "x", ttl_s=2)
    queue.put("live", "x", ttl_s=60)
    queue.put("later", "x", ttl_s=1)
    clock.advance(3)
    drained = queue.drain_expired()
    assert [item.task.task_id for item in drained] == ["later", "late"]
    assert all(item.expired for item in drained)
    assert taken_ids(queue) == ["live"]


def test_counters_track_live_and_expired_hand_outs(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.put("live", "x")
    queue.put("stale", "x", ttl_s=1)
    clock.advance(1)
    taken_ids(queue)
    stats = queue.stats()
    assert (stats.dequeued, stats.expired, stats.depth) == (1, 1, 0)


def test_get_times_out_with_none_on_an_empty_queue(clock: FakeClock) -> None:
    assert make_queue(clock).get(timeout_s=0.01) is None


def test_blocked_get_wakes_when_a_task_arrives(clock: FakeClock) -> None:
    queue = make_queue(clock)
    results = []
    getter = threading.Thread(target=lambda: results.append(queue.get(timeout_s=5)))
    getter.start()
    queue.put("t1", "payload")
    getter.join(5)
    assert results[0].task.payload == "payload"


def test_close_wakes_a_blocked_getter_with_queue_closed(clock: FakeClock) -> None:
    queue = make_queue(clock)
    errors = []

    def get() -> None:
        try:
            queue.get(timeout_s=5)
        except QueueClosedError as error:
            errors.append(error)

    getter = threading.Thread(target=get)
    getter.start()
    queue.close()
    getter.join(5)
    assert len(errors) == 1


def test_closed_queue_refuses_puts_but_hands_out_what_it_holds(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.put("t1", "x")
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.put("t2", "x")
    item = queue.get(timeout_s=0)
    assert item is not None and item.task.task_id == "t1"


def test_get_on_a_closed_empty_queue_raises_queue_closed(clock: FakeClock) -> None:
    queue = make_queue(clock)
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.get(timeout_s=0)


def test_capacity_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="capacity"):
        TaskQueue(0)
