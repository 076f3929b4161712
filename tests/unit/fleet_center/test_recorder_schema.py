"""Metric schema builders: names, tags and fields of every measurement."""

from __future__ import annotations

import pytest

from broker.messages.metrics import MetricBatch
from metrics import schema

T0 = 1_700_000_000_000_000_000


def test_heartbeat_stores_loaded_models_as_count_and_sorted_ids() -> None:
    point = schema.heartbeat_point("pi-01", "edge", cpu_percent=12, memory_percent=40.5, load_1m=0.25, queue_depth=3,
                                   loaded_models=["b", "a"], timestamp_ns=T0)
    assert (point.measurement, point.tags) == ("heartbeat", {"node": "pi-01", "role": "edge"})
    assert point.fields["loaded_models"] == 2 and point.fields["loaded_model_ids"] == "a,b"
    assert isinstance(point.fields["cpu_percent"], float) and "metrics_dropped" not in point.fields


def test_heartbeat_keeps_the_cost_and_budget_counters_and_drops_the_rest() -> None:
    counters = {"budget_tokens": 64, "budget_expected_disagreements": 5.5, "budget_shift": -0.25,
                "drafts_verified": 10, "queue_refused": 3}
    point = schema.heartbeat_point("pi-01", "edge", cpu_percent=1, memory_percent=2, load_1m=0, queue_depth=0,
                                   counters=counters, timestamp_ns=T0)
    assert {name: point.fields[name] for name in ("budget_tokens", "budget_expected_disagreements", "budget_shift",
                                                  "drafts_verified")} == {"budget_tokens": 64.0,
        "budget_expected_disagreements": 5.5, "budget_shift": -0.25, "drafts_verified": 10.0}
    assert isinstance(point.fields["budget_tokens"], float) and "queue_refused" not in point.fields


def test_round_points_add_a_summary_weighted_by_task_count() -> None:
    points = schema.round_points(
        7,
        {
            "QA": schema.TaskTypeStats(tasks=3, edge=2, cloud=1, latency_ms_mean=100.0, latency_ms_p95=150.0, quality=0.9),
            "TS": schema.TaskTypeStats(tasks=1, edge=0, cloud=1, latency_ms_mean=500.0, latency_ms_p95=500.0, quality=0.5),
        },
        duration_s=12.0, caching_round=True, timestamp_ns=T0,
    )
    by_type = {point.tags["task_type"]: point.fields for point in points}
    assert set(by_type) == {"QA", "TS", schema.ALL_TASK_TYPES}
    summary = by_type[schema.ALL_TASK_TYPES]
    assert (summary["tasks"], summary["tasks_edge"], summary["tasks_cloud"], summary["round_id"]) == (4, 2, 2, 7)
    assert summary["latency_ms_mean"] == pytest.approx(200.0)
    assert summary["quality"] == pytest.approx(0.8)
    assert summary["latency_ms_p95"] == 500.0 and summary["caching_round"] is True


def test_summary_ignores_failed_tasks_in_means_and_unknown_quality() -> None:
    summary = schema.summarize([
        schema.TaskTypeStats(tasks=2, edge=1, cloud=0, failed=1, latency_ms_mean=80.0),
        schema.TaskTypeStats(tasks=2, edge=2, cloud=0, latency_ms_mean=20.0, quality=0.6),
    ])
    assert summary.latency_ms_mean == pytest.approx((80.0 * 1 + 20.0 * 2) / 3)
    assert summary.quality == pytest.approx(0.6) and summary.failed == 1


def test_unknown_values_are_left_out_not_stored_as_none() -> None:
    point = schema.caching_point(21, "pi-02", "smollm2-135m-int8", placed=True, changed=False, status="kept", timestamp_ns=T0)
    assert "deploy_s" not in point.fields
    assert point.tags == {"edge": "pi-02", "model": "smollm2-135m-int8"}


def test_task_point_derives_tokens_per_second() -> None:
    point = schema.task_point("cloud-1", "smollm2-135m", "SG", "ok", round_id=1, task_id="t1", latency_ms=500.0,
                              tokens=20, timestamp_ns=T0)
    assert point.fields["tokens_per_s"] == pytest.approx(40.0)
    assert "quality" not in point.fields


def test_token_points_of_a_response_have_strictly_increasing_timestamps() -> None:
    timings = [schema.TokenTiming("edge", position, 15, latency_ms=0.0) for position in range(3)]
    timings.append(schema.TokenTiming("cloud", 3, 30, latency_ms=2.5, bytes_up=1152, bytes_down=24))
    points = schema.token_points("pi-01", "s-1", timings, start_ns=T0)
    stamps = [point.timestamp_ns for point in points]
    assert stamps == sorted(set(stamps))
    assert stamps[-1] == stamps[-2] + 2_500_000
    assert points[-1].tags == {"node": "pi-01", "session": "s-1", "source": "cloud"}


def test_token_source_must_be_edge_or_cloud() -> None:
    with pytest.raises(ValueError, match="source"):
        schema.token_point("pi-01", "s", "fog", position=0, exit_layer=1, latency_ms=1.0, timestamp_ns=T0)


def test_model_event_must_be_load_or_unload() -> None:
    assert schema.model_event_point("pi-01", "m", "load", model_bytes=10, load_s=1.5, timestamp_ns=T0).tags["event"] == "load"
    with pytest.raises(ValueError, match="event"):
        schema.model_event_point("pi-01", "m", "evict", model_bytes=10, timestamp_ns=T0)


def test_points_travel_in_a_metric_batch() -> None:
    points = (
        schema.model_profile_point("smollm2-135m-int8", model_bytes=150_000_000, perplexity=12.6, load_s=1.1,
                                   token_ms=39.0, timestamp_ns=T0),
        schema.heartbeat_point("pi-01", "edge", cpu_percent=1, memory_percent=2, load_1m=0, queue_depth=0, timestamp_ns=T0),
    )
    batch = MetricBatch.from_bytes(MetricBatch("pi-01", points).to_bytes())
    assert batch.points == points


def test_float_fields_stay_floats_when_given_integers() -> None:
    # InfluxDB rejects a field written as an integer once and as a float later.
    point = schema.round_points(1, {"QA": schema.TaskTypeStats(tasks=1, edge=1, cloud=0, latency_ms_mean=100, quality=1)},
                                duration_s=3, timestamp_ns=T0)[0]
    assert isinstance(point.fields["latency_ms_mean"], float) and isinstance(point.fields["quality"], float)
    profile = schema.model_profile_point("m", model_bytes=10, perplexity=12, load_s=2, token_ms=40, timestamp_ns=T0)
    assert all(isinstance(profile.fields[name], float) for name in ("perplexity", "load_s", "token_ms"))
