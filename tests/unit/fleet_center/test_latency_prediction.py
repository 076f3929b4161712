"""Token counts to plan with and the cloud worker's queue."""

import pytest

from fleet_center.latency_prediction import cloud_queue_latencies, planned_tokens


def test_a_task_seen_before_is_planned_with_its_own_count_then_its_types():
    assert planned_tokens(7, 2, fallback=90, by_task={7: 11.6}, by_type={2: 30.0}) == 12
    assert planned_tokens(8, 2, fallback=90, by_task={7: 11.6}, by_type={2: 30.0}) == 30
    assert planned_tokens(9, 4, fallback=90, by_task={}, by_type={}) == 90


def test_cloud_tasks_queue_per_worker_in_dispatch_order():
    items = [("a", "cloud-1", 2.0), ("b", "cloud-2", 1.0), ("c", "cloud-1", 3.0)]
    latencies = cloud_queue_latencies(items, overhead_s=0.5, backlog_s={"cloud-2": 4.0})
    assert latencies == pytest.approx({"a": 2.5, "b": 5.5, "c": 5.5})
