"""Dashboard shaping on plain DataFrames shaped like a store's query result (no InfluxDB, no Streamlit)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import pytest

from broker.messages.metrics import MetricPoint
from dashboards import shaping
from metrics import schema
from metrics.store import frame

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def rows(points: Iterable[MetricPoint]) -> pd.DataFrame:
    """What MetricStore.query returns for these points."""
    return frame([{"time": p.timestamp_ns, **p.tags, **p.fields} for p in points])


def heartbeat(node: str, at_s: float, role: str = "edge", cpu: float = 10.0) -> MetricPoint:
    return schema.heartbeat_point(node, role, cpu_percent=cpu, memory_percent=50, load_1m=1, queue_depth=2,
                                  loaded_models=["m-int8", "m-edge15"], timestamp_ns=T0 + int(at_s * S))


def test_fleet_status_takes_each_nodes_latest_heartbeat_and_marks_silent_nodes_offline() -> None:
    data = rows([heartbeat("pi-01", 0, cpu=5), heartbeat("pi-01", 50, cpu=60), heartbeat("pi-02", 10),
                 heartbeat("cloud-1", 55, role="cloud")])
    status = shaping.fleet_status(data, pd.Timestamp(T0 + 60 * S, unit="ns", tz="UTC"), offline_after_s=15).set_index("node")
    assert list(status.index) == ["pi-01", "pi-02", "cloud-1"]  # edges first
    assert status.loc["pi-01", "cpu_percent"] == 60 and status.loc["pi-01", "status"] == shaping.ONLINE
    assert status.loc["pi-02", "status"] == shaping.OFFLINE
    assert status.loc["pi-02", "heartbeat_age_s"] == pytest.approx(50.0)
    assert status.loc["cloud-1", "loaded_model_ids"] == "m-edge15, m-int8"


def test_fleet_status_shows_each_nodes_latest_rejected_input_count() -> None:
    older = schema.heartbeat_point("pi-01", "edge", 1, 1, 1, 0, rejected_inputs=3, timestamp_ns=T0)
    newer = schema.heartbeat_point("pi-01", "edge", 1, 1, 1, 0, rejected_inputs=40, timestamp_ns=T0 + S)
    status = shaping.fleet_status(rows([older, newer, heartbeat("pi-02", 1)]), pd.Timestamp(T0 + 2 * S, unit="ns", tz="UTC"),
                                  offline_after_s=15).set_index("node")
    assert status.loc["pi-01", "rejected_inputs"] == 40
    assert pd.isna(status.loc["pi-02", "rejected_inputs"])  # a node that never reported the counter


def test_rejected_inputs_sums_the_refusal_counters_of_a_heartbeat() -> None:
    from broker.messages.membership import rejected_inputs

    counters = {"malformed": 5.0, "http_rejected": 2.0, "impersonations_refused": 1.0, "published": 900.0}
    assert rejected_inputs(counters) == 8


def round_rows() -> pd.DataFrame:
    stats = {"QA": schema.TaskTypeStats(tasks=4, edge=3, cloud=1, latency_ms_mean=100.0, quality=0.8),
             "TS": schema.TaskTypeStats(tasks=2, edge=0, cloud=1, failed=1, latency_ms_mean=300.0, quality=0.4)}
    points = [*schema.round_points(1, stats, duration_s=10.0, timestamp_ns=T0 + 20 * S),
              *schema.round_points(0, stats, duration_s=8.0, caching_round=True, timestamp_ns=T0 + 10 * S)]
    return rows(points)


def test_round_summary_has_one_row_per_round_with_its_span_and_edge_share() -> None:
    summary = shaping.round_summary(round_rows())
    assert list(summary["round_id"]) == [0, 1]
    first = summary.iloc[0]
    assert (first["tasks"], first["tasks_edge"], first["tasks_cloud"], first["tasks_failed"]) == (6, 3, 2, 1)
    assert first["edge_share"] == pytest.approx(0.6)
    assert first["end"] - first["start"] == pd.Timedelta(seconds=8)
    assert bool(first["caching_round"]) and not bool(summary.iloc[1]["caching_round"])


def test_a_caching_round_without_tasks_has_a_row_and_no_edge_share_or_quality() -> None:
    """The center records a caching round with no tasks (fleet_center/metrics_feed.py)."""
    points = [*schema.round_points(20, {}, duration_s=4.0, caching_round=True, timestamp_ns=T0 + 30 * S)]
    summary = shaping.round_summary(pd.concat([round_rows(), rows(points)], ignore_index=True))
    assert list(summary["round_id"]) == [0, 1, 20]
    caching = summary.iloc[-1]
    assert bool(caching["caching_round"]) and caching["tasks"] == 0
    assert pd.isna(caching["edge_share"]) and pd.isna(caching["quality"])


def test_placement_split_and_quality_by_type_come_per_round() -> None:
    data = round_rows()
    split = shaping.placement_split(shaping.round_summary(data))
    assert split[split["round_id"] == 1].set_index("where")["tasks"].to_dict() == {"cloud": 2, "edge": 3, "failed": 1}
    quality = shaping.quality_by_type(data)
    assert list(quality["task_type"]) == ["QA", "TS", "QA", "TS"]
    assert quality["quality"].tolist() == pytest.approx([0.8, 0.4, 0.8, 0.4])


def caching_rows() -> pd.DataFrame:
    def cell(round_id: int, edge: str, model: str, placed: bool, changed: bool, status: str, deploy_s: float | None = None) -> MetricPoint:
        return schema.caching_point(round_id, edge, model, placed=placed, changed=changed, status=status, deploy_s=deploy_s,
                                    timestamp_ns=T0 + round_id * S)

    return rows([
        cell(0, "pi-01", "a", True, True, "ready", 3.0), cell(0, "pi-02", "b", True, True, "ready", 4.0),
        cell(21, "pi-01", "a", True, False, "kept"), cell(21, "pi-02", "b", False, True, "evicted"),
        cell(21, "pi-02", "c", True, True, "failed", 9.0), cell(21, "pi-01", "c", True, True, "ready", 5.0),
    ])


def test_placement_cells_tell_kept_added_failed_and_evicted_apart() -> None:
    data = caching_rows()
    assert shaping.caching_round_ids(data) == [21, 0]
    cells = shaping.placement_cells(data, 21).set_index(["model", "edge"])
    assert cells["change"].to_dict() == {
        ("a", "pi-01"): shaping.KEPT, ("b", "pi-02"): shaping.EVICTED,
        ("c", "pi-01"): shaping.ADDED, ("c", "pi-02"): shaping.FAILED,
    }
    matrix = shaping.placement_matrix(cells.reset_index())
    assert list(matrix.columns) == ["pi-01", "pi-02"] and matrix.loc["a", "pi-02"] == ""


def test_changes_per_round_counts_additions_evictions_and_failures() -> None:
    history = shaping.changes_per_round(caching_rows()).set_index("round_id")
    assert history.loc[0, ["added", "evicted", "failed"]].tolist() == [2, 0, 0]
    assert history.loc[21, ["added", "evicted", "failed"]].tolist() == [2, 1, 1]
    assert history.loc[21, "deploy_s_max"] == 9.0


def token_rows() -> pd.DataFrame:
    first = [schema.TokenTiming("edge", 0, 10, 20.0, bytes_up=1152), schema.TokenTiming("cloud", 1, 30, 120.0, bytes_up=1152, bytes_down=24),
             schema.TokenTiming("edge", 2, 10, 22.0, bytes_up=1152), schema.TokenTiming("edge", 3, 20, 30.0, bytes_up=1152)]
    second = [schema.TokenTiming("edge", 0, 20, 25.0)]
    return rows([*schema.token_points("pi-01", "s-1", first, start_ns=T0), *schema.token_points("pi-02", "s-2", second, start_ns=T0 + S)])


def test_token_sessions_sum_traffic_and_count_cloud_requests_newest_first() -> None:
    sessions = shaping.token_sessions(token_rows())
    assert list(sessions["session"]) == ["s-2", "s-1"]
    s1 = sessions.set_index("session").loc["s-1"]
    assert (s1["tokens"], s1["cloud_tokens"], s1["bytes_up"], s1["bytes_down"]) == (4, 1, 4608, 24)
    assert s1["cloud_ratio"] == pytest.approx(0.25) and s1["node"] == "pi-01"
    assert shaping.cloud_request_ratio(token_rows()) == pytest.approx(0.2)


def test_exit_layer_histogram_counts_tokens_per_layer_and_source() -> None:
    histogram = shaping.exit_layer_histogram(token_rows())
    assert histogram.values.tolist() == [[10, "edge", 2], [20, "edge", 2], [30, "cloud", 1]]
    assert len(shaping.tokens_of(token_rows(), "s-2")) == 1


def test_latest_profile_per_model_with_short_chart_labels() -> None:
    data = rows([
        schema.model_profile_point("sm-135m", model_bytes=500_000_000, perplexity=12.0, timestamp_ns=T0),
        schema.model_profile_point("sm-135m-int8", model_bytes=150_000_000, perplexity=14.0, timestamp_ns=T0),
        schema.model_profile_point("sm-135m-int8", model_bytes=150_000_000, perplexity=13.0, timestamp_ns=T0 + S),
    ])
    latest = shaping.latest_profiles(data)
    assert latest[["model", "label", "size_mb", "perplexity"]].values.tolist() == [
        ["sm-135m-int8", "int8", 150.0, 13.0], ["sm-135m", "sm-135m", 500.0, 12.0],
    ]


def test_models_whose_last_event_is_a_load_are_loaded() -> None:
    data = rows([
        schema.model_event_point("pi-01", "a", "load", model_bytes=1, load_s=1.0, timestamp_ns=T0),
        schema.model_event_point("pi-01", "a", "unload", model_bytes=1, timestamp_ns=T0 + S),
        schema.model_event_point("pi-01", "b", "load", model_bytes=1, timestamp_ns=T0 + S),
    ])
    assert shaping.loaded_per_node(data).values.tolist() == [["pi-01", "b"]]
    log = shaping.model_event_log(data)
    assert len(log) == 3 and log.iloc[-1][["model", "event", "load_s"]].tolist() == ["a", "load", 1.0]  # newest first


@pytest.mark.parametrize(
    "shape",
    [
        lambda empty: shaping.fleet_status(empty, pd.Timestamp.now(tz="UTC"), 15.0),
        shaping.round_summary, shaping.quality_by_type, shaping.changes_per_round, shaping.token_sessions,
        shaping.exit_layer_histogram, shaping.latest_profiles, shaping.model_event_log, shaping.loaded_per_node,
        lambda empty: shaping.placement_cells(empty, 21), lambda empty: shaping.placement_split(shaping.round_summary(empty)),
    ],
)
def test_empty_input_gives_an_empty_frame(shape: object) -> None:
    assert shape(pd.DataFrame()).empty  # type: ignore[operator]


def test_prediction_and_measurement_become_per_round_medians_and_an_error():
    points = [schema.task_point("pi-01", "m", "QA", "ok", round_id=r, task_id=f"t{r}{i}", latency_ms=1.0,
                                predicted_ms=p, measured_ms=m, timestamp_ns=T0 + (r * 10 + i) * S)
              for r, i, p, m in ((1, 0, 1000.0, 2000.0), (1, 1, 3000.0, 2000.0), (1, 2, 2000.0, 2000.0),
                                 (2, 0, 500.0, 1000.0))]
    data = rows(points)
    series = shaping.prediction_vs_measured(data)
    assert series.to_dict("records") == [
        {"round_id": 1, "series": "measured", "latency_s": 2.0}, {"round_id": 1, "series": "predicted", "latency_s": 2.0},
        {"round_id": 2, "series": "measured", "latency_s": 1.0}, {"round_id": 2, "series": "predicted", "latency_s": 0.5}]
    assert shaping.prediction_error_pct(data) == pytest.approx(50.0)  # errors 50, 50, 0, 50 %


def test_tasks_without_predictions_give_empty_shapes():
    data = rows([schema.task_point("pi-01", "m", "QA", "ok", round_id=1, task_id="t", latency_ms=1.0, timestamp_ns=T0)])
    assert shaping.prediction_vs_measured(data).empty and shaping.prediction_error_pct(data) is None


def test_measured_quality_is_the_mean_per_model_and_type():
    points = [schema.task_point("pi-01", model, "NER", "ok", round_id=1, task_id=f"{model}{q}", latency_ms=1.0,
                                quality=q, timestamp_ns=T0 + int(q * 100) * S)
              for model, q in (("fp32", 0.4), ("fp32", 0.6), ("int8", 0.1))]
    quality = shaping.measured_quality(rows(points))
    assert quality.to_dict("records") == [{"model": "fp32", "task_type": "NER", "quality": pytest.approx(0.5), "tasks": 2},
                                          {"model": "int8", "task_type": "NER", "quality": pytest.approx(0.1), "tasks": 1}]


def test_quality_keep_comes_from_the_newest_round_summary():
    stats = {"QA": schema.TaskTypeStats(tasks=1, edge=1, cloud=0, failed=0, latency_ms_mean=1.0, latency_ms_p95=1.0,
                                        quality=0.5)}
    points = schema.round_points(1, stats, 1.0, timestamp_ns=T0, quality_keep=0.8)
    points += schema.round_points(2, stats, 1.0, timestamp_ns=T0 + S, quality_keep=0.9)
    assert shaping.latest_quality_keep(rows(points)) == 0.9


def test_draft_counts_sum_the_latest_counters_of_each_cloud_worker():
    beats = pd.DataFrame({
        "time": pd.to_datetime([1, 2, 1], unit="s", utc=True), "node": ["cloud-1", "cloud-1", "cloud-2"],
        "drafts_verified": [10.0, 30.0, 5.0], "drafts_accepted": [8.0, 20.0, 5.0],
    })
    assert shaping.draft_counts(beats) == {"drafted": 35, "accepted": 25, "rejected": 10}


def test_cloud_cost_per_token_divides_each_modes_counters_by_its_tokens():
    beats = pd.DataFrame({
        "time": pd.to_datetime([1, 2], unit="s", utc=True), "node": ["cloud-1", "cloud-1"],
        "cost_speculative_tokens": [10.0, 40.0], "cost_speculative_cpu_ms": [100.0, 800.0],
        "cost_speculative_layer_passes": [40.0, 160.0],
        "cost_cloud_only_tokens": [0.0, 0.0], "cost_cloud_only_cpu_ms": [0.0, 0.0], "cost_cloud_only_layer_passes": [0.0, 0.0],
    })
    costs = shaping.cloud_cost_per_token(beats)
    assert costs.to_dict("records") == [{"mode": "speculative", "tokens": 40, "cpu_ms_per_token": 20.0,
                                         "layer_passes_per_token": 4.0}]


def test_no_cloud_counters_mean_no_drafts_and_no_costs():
    beats = pd.DataFrame({"time": pd.to_datetime([1], unit="s", utc=True), "node": ["pi-01"], "cpu_percent": [3.0]})
    assert shaping.draft_counts(beats)["drafted"] == 0 and shaping.cloud_cost_per_token(beats).empty


def test_agreement_budgets_read_each_edges_latest_counters():
    beats = pd.DataFrame({
        "time": pd.to_datetime([1, 2, 1, 1], unit="s", utc=True), "node": ["pi-01", "pi-01", "pi-02", "cloud-1"],
        "budget_tokens": [10.0, 100.0, 50.0, None], "budget_expected_disagreements": [1.0, 9.0, 6.0, None],
        "budget_shift": [-0.5, -0.2, 0.3, None],
    })
    budgets = shaping.agreement_budgets(beats)
    assert budgets.to_dict("records") == [
        {"node": "pi-01", "tokens": 100, "expected_agreement": pytest.approx(0.91), "shift": -0.2},
        {"node": "pi-02", "tokens": 50, "expected_agreement": pytest.approx(0.88), "shift": 0.3}]
    assert shaping.agreement_budgets(beats.drop(columns=["budget_shift"])).empty
