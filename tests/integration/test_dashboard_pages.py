"""Every dashboard page under Streamlit's AppTest, on points the recorder wrote into a real influxd."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboards.sample_data import EDGES, MODELS, sample_fleet
from fleet_center.recorder import MetricRecorder
from metrics import schema
from metrics.config import RecorderConfig
from metrics.launcher import free_port
from tests.conftest import wait_until
from tests.integration.metrics_servers import RunningInflux

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
PAGES = ("fleet", "rounds", "caching", "tokens", "models", "pipeline")


@pytest.fixture(scope="module")
def recorded_db(influxd: RunningInflux) -> Iterator[str]:
    """A database holding the sample fleet's points, written by the recorder."""
    store_config = influxd.store_config()
    fleet = sample_fleet(time.time_ns())
    total = sum(len(points) for points in fleet.values())
    with MetricRecorder(RecorderConfig(store=store_config, flush_interval_s=0.05)) as recorder:
        for points in fleet.values():
            recorder.record(points)
        assert wait_until(lambda: recorder.stats().written == total)
    yield store_config.db


def open_page(page: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=30)
    app.run()
    if page != "fleet":
        app.switch_page(f"pages/{page}.py").run()
    assert not app.exception, [exception.value for exception in app.exception]
    return app


def metric(app: AppTest, label: str) -> str:
    values = {item.label: item.value for item in app.metric}
    return values[label]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, influxd: RunningInflux, recorded_db: str) -> None:
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_URL", influxd.url)
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_DB", recorded_db)
    # pi-03 fell silent 120 s before the sample's "now", the others 2 s before: 60 s tells them apart
    # however late in the module a test runs.
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_OFFLINE_AFTER_S", "60")


@pytest.mark.usefixtures("recorded")
def test_fleet_page_shows_every_node_and_the_silent_edge_offline() -> None:
    app = open_page("fleet")
    assert metric(app, "Nodes online") == "3 / 4"
    assert metric(app, "Edges online") == "2 / 3"
    nodes = app.dataframe[0].value
    assert set(nodes["node"]) == {*EDGES, "cloud-1"}
    assert nodes.set_index("node").loc["pi-03", "status"].endswith("offline")


@pytest.mark.usefixtures("recorded")
def test_rounds_page_shows_every_round_latest_first() -> None:
    app = open_page("rounds")
    assert metric(app, "Rounds") == "24"
    assert metric(app, "Last round") == "#23"
    table = app.dataframe[0].value
    assert list(table["round_id"])[:3] == [23, 22, 21]
    assert bool(table.set_index("round_id").loc[21, "caching_round"])


@pytest.mark.usefixtures("recorded")
def test_caching_page_shows_placement_changes_and_the_failed_deployment() -> None:
    app = open_page("caching")
    assert app.selectbox(key="caching_round").options == ["round 21", "round 0"]
    assert (metric(app, "Deployed"), metric(app, "Evicted"), metric(app, "Failed deployments")) == ("1", "2", "1")
    matrix = app.dataframe[0].value
    assert matrix.loc["smollm2-135m-edge15", "pi-03"] == "failed"
    assert matrix.loc["smollm2-135m-edge20", "pi-02"] == "kept"
    app.selectbox(key="caching_round").select(0).run()
    assert (metric(app, "Models placed"), metric(app, "Deployed"), metric(app, "Evicted")) == ("4", "4", "0")


@pytest.mark.usefixtures("recorded")
def test_tokens_page_shows_all_sessions_and_narrows_to_one() -> None:
    app = open_page("tokens")
    sessions = app.dataframe[0].value
    assert len(sessions) == 6
    assert int(metric(app, "Tokens")) == int(sessions["tokens"].sum())
    first = sessions.iloc[0]
    app.selectbox(key="token_session").select(first["session"]).run()
    assert int(metric(app, "Tokens")) == int(first["tokens"])
    assert metric(app, "Cloud requests") == f"{first['cloud_tokens'] / first['tokens']:.0%}"


@pytest.mark.usefixtures("recorded")
def test_tokens_page_shows_drafts_and_cloud_cost_per_token_by_mode() -> None:
    app = open_page("tokens")
    costs = table_with(app, "cpu_ms_per_token")
    assert list(costs["mode"]) == ["cloud_only", "speculative"]
    assert costs.set_index("mode")["cpu_ms_per_token"].to_dict() == pytest.approx({"cloud_only": 60.0, "speculative": 22.0})
    drafted, accepted, rejected = (int(metric(app, label)) for label in
                                   ("Drafted tokens (verified)", "Accepted drafts", "Rejected drafts"))
    assert drafted == accepted + rejected and accepted > rejected > 0


def table_with(app: AppTest, column: str):
    """The page's one table that has `column`."""
    tables = [frame.value for frame in app.dataframe if column in frame.value.columns]
    assert len(tables) == 1, f"{len(tables)} tables with {column!r}"
    return tables[0]


@pytest.mark.usefixtures("recorded")
def test_tokens_page_shows_each_edges_agreement_budget() -> None:
    budgets = table_with(open_page("tokens"), "expected_agreement").set_index("node")
    assert list(budgets.index) == ["pi-01", "pi-02", "pi-03"]  # every edge that counted tokens, the cloud not
    assert budgets["expected_agreement"].to_dict() == pytest.approx({"pi-01": 0.912, "pi-02": 0.910, "pi-03": 0.908})
    assert (budgets["shift"] < 0).all() and (budgets["tokens"] > 0).all()


@pytest.mark.usefixtures("recorded")
def test_pipeline_page_shows_the_run_and_its_reallocation() -> None:
    app = open_page("pipeline")
    assert int(metric(app, "Tokens")) == 48
    assert int(metric(app, "Reallocations")) == 1
    assert len(app.selectbox[0].options) == 1


@pytest.mark.usefixtures("recorded")
def test_models_page_shows_every_profile_and_the_loads() -> None:
    app = open_page("models")
    profiles, events, loaded = (frame.value for frame in app.dataframe)
    assert sorted(profiles["model"]) == sorted(model for model, *_ in MODELS)
    assert set(events["event"]) == {"load", "unload"}
    # pi-03 unloaded its model in round 21 and the new deployment failed: nothing loaded there.
    assert set(loaded["node"]) == {"pi-01", "pi-02"}


def test_models_page_says_what_was_not_measured(monkeypatch: pytest.MonkeyPatch, influxd: RunningInflux) -> None:
    store_config = influxd.store_config()
    now = time.time_ns()
    influxd.store(store_config.db).write([
        schema.model_profile_point("m", 100_000_000, load_s=1.0, token_ms=5.0, timestamp_ns=now),
        schema.model_profile_point("m-int8", 30_000_000, load_s=0.3, token_ms=2.0, timestamp_ns=now),
    ])
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_URL", influxd.url)
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_DB", store_config.db)
    app = open_page("models")
    captions = [caption.value for caption in app.caption]
    assert "No model has a measured perplexity yet." in captions
    assert len(app.dataframe) == 1  # the profiles; no load/unload table without events


@pytest.mark.parametrize("page", PAGES)
def test_empty_database_shows_an_empty_state(page: str, monkeypatch: pytest.MonkeyPatch, influxd: RunningInflux) -> None:
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_URL", influxd.url)
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_DB", "nothing_recorded")
    app = open_page(page)
    assert any("recorded in the last 15 minutes" in info.value for info in app.info)
    assert not app.error


def test_unreachable_store_shows_an_error_not_a_stack_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_TIMEOUT_S", "0.5")
    app = open_page("rounds")
    assert "Cannot read rounds" in app.error[0].value


@pytest.mark.usefixtures("recorded")
def test_a_truncated_range_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_MAX_ROWS", "50")
    app = open_page("fleet")
    assert any("Showing the newest 50 heartbeats" in caption.value for caption in app.caption)


def test_bad_configuration_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_DASHBOARD_BACKEND", "graphite")
    app = open_page("fleet")
    assert "store.backend" in app.error[0].value
