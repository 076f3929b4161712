"""Routed queries through the edge service: real broker, real cloud node, tiny random-weight models."""

import dataclasses

import httpx
import pytest

from edge_node.config import EdgeConfig
from edge_node.service import EdgeService
from models.tiny import write_tiny_model
from routing.escalation import EscalationRule
from routing.features import SCALAR_COLUMNS
from routing.miner import MinerModel
from runtime.settings import load
from tests.integration.test_edge_collab_tasks import cloud as cloud  # the fixture, on this module's store

EDGE_MODEL, CLOUD_MODEL = "tiny-edge", "tiny-cloud"


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    write_tiny_model(root, EDGE_MODEL, seed=3, layers=4, exit_layers=(1, 2))
    write_tiny_model(root, CLOUD_MODEL, seed=5, layers=4)
    return root


def write_miner(directory, threshold: float) -> None:
    """A miner that gives every query P(hard) = 0.5: threshold 0 sends all to the cloud, 1 none."""
    scalars = len(SCALAR_COLUMNS)
    MinerModel((0.0,) * scalars, (1.0,) * scalars, (), (), (), (0.0,) * (6 + scalars), 0.0,
               threshold).save(directory / f"miner-{EDGE_MODEL}.json")


def start_edge(mosquitto, store, tmp_path, *settings):
    config = load(EdgeConfig, env={}, overrides=[
        "node_id=pi-01", f"model_store={store}", f"state_dir={tmp_path / 'state'}", "http_port=0",
        "heartbeat_interval_s=0.5", f"router_cloud_model={CLOUD_MODEL}", f"miner_dir={tmp_path / 'miners'}",
        "router_cloud_timeout_s=5", *settings,
    ])
    return EdgeService(dataclasses.replace(config, bus=mosquitto.bus_config())).start()


@pytest.fixture
def edge(mosquitto, store, tmp_path):
    (tmp_path / "miners").mkdir()
    service = start_edge(mosquitto, store, tmp_path)
    yield service
    service.stop()


def ask(edge, **fields):
    body = {"task_type": "SG", "model_name": EDGE_MODEL, "prompt": "word " * 12, "wait": True, "max_new_tokens": 8,
            **fields}
    response = httpx.post(f"{edge.http.url}/perform_task", json=body, timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "ok", result["error"]
    return result


def test_auto_route_sends_a_hard_query_to_the_cloud_model(edge, cloud, tmp_path):
    write_miner(tmp_path / "miners", threshold=0.0)
    routed = ask(edge, route="auto")
    direct = ask(edge, route="cloud")
    assert routed["route"] == "cloud" and {t["decided_by"] for t in routed["tokens"]} == {"cloud"}
    assert [t["token_id"] for t in routed["tokens"]] == [t["token_id"] for t in direct["tokens"]]
    assert routed["route_score"] == pytest.approx(0.5)


def test_auto_route_keeps_an_easy_query_on_the_edge(edge, cloud, tmp_path):
    write_miner(tmp_path / "miners", threshold=1.0)
    routed = ask(edge, route="auto")
    assert routed["route"] == "edge" and "cloud" not in {t["decided_by"] for t in routed["tokens"]}


def test_auto_route_without_a_miner_answers_on_the_edge(edge, cloud):
    routed = ask(edge, route="auto")
    assert routed["route"] == "edge" and "no miner" in routed["route_reason"]


def test_inference_then_mining_escalates_an_unsure_answer(mosquitto, store, tmp_path, cloud):
    edge = start_edge(mosquitto, store, tmp_path, "escalate_min_confidence=1.0")
    try:
        routed = ask(edge, route="auto", mining_mode="inference_then_mining")
    finally:
        edge.stop()
    assert routed["route"] == "escalated" and {t["decided_by"] for t in routed["tokens"]} == {"cloud"}


@pytest.mark.parametrize(("fitted_min_confidence", "route"), [(1.0, "escalated"), (0.0, "edge")])
def test_inference_then_mining_uses_the_rule_fitted_for_the_edge_model(mosquitto, store, tmp_path, cloud,
                                                                       fitted_min_confidence, route):
    (tmp_path / "miners").mkdir()  # no rule configured: the file fitted for tiny-edge decides
    EscalationRule(fitted_min_confidence, 1.0, escalate_parse_failures=False).save(
        tmp_path / "miners" / f"escalation-{EDGE_MODEL}.json")
    edge = start_edge(mosquitto, store, tmp_path)
    try:
        routed = ask(edge, route="auto", mining_mode="inference_then_mining")
    finally:
        edge.stop()
    assert routed["route"] == route


def test_a_cloud_routed_query_is_answered_by_the_edge_when_no_cloud_answers(edge):
    routed = ask(edge, route="cloud")
    assert routed["route"] == "edge" and "cloud unavailable" in routed["route_reason"]
    assert routed["tokens"]


@pytest.mark.slow
def test_the_committed_miner_routes_real_queries_on_the_real_edge_model():
    """The shipped miner fits the real bf16 model's features, and held-out QA queries go to the cloud
    (the type it learned the cloud gains most on) while TC ones stay on the edge."""
    from edge_node.query_routing import QueryRouting
    from fleet_center.workload import QA, TC, load_tasks
    from models.paths import default_store_root
    from models.store import ModelStore
    from routing.splits import split_tasks

    model = ModelStore(default_store_root()).load("smollm2-135m-bf16")
    tasks = load_tasks()
    heldout = set(split_tasks([(t.task_id, t.task_type) for t in tasks]).heldout)
    routing = QueryRouting("pi-01", client=None)
    decisions = {task_type: [routing.decide(model, str(t.task_id), str(task_type), t.task_token)
                             for t in tasks if t.task_id in heldout and t.task_type == task_type][:5]
                 for task_type in (TC, QA)}
    assert all("P(hard)" in d.reason and 0.0 <= d.score <= 1.0 for ds in decisions.values() for d in ds)
    assert [d.route for d in decisions[QA]].count("cloud") > [d.route for d in decisions[TC]].count("cloud")
