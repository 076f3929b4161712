"""Tasks in collaborative and baseline modes through the edge service: real broker, real cloud node."""

import dataclasses

import httpx
import pytest

from cloud_node.config import CloudConfig
from cloud_node.service import CloudService
from edge_node.config import EdgeConfig
from edge_node.service import EdgeService
from models.tiny import write_tiny_model
from runtime.settings import load


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    write_tiny_model(root, "tiny-exits", seed=3, layers=4, exit_layers=(1, 2))
    return root


@pytest.fixture
def edge(mosquitto, store, tmp_path):
    config = load(EdgeConfig, env={}, overrides=[
        "node_id=pi-01", f"model_store={store}", f"state_dir={tmp_path / 'state'}", "http_port=0",
        "heartbeat_interval_s=0.5", "cloud_deadline_s=3",
    ])
    service = EdgeService(dataclasses.replace(config, bus=mosquitto.bus_config())).start()
    yield service
    service.stop()


@pytest.fixture
def cloud(mosquitto, store, tmp_path):
    config = dataclasses.replace(CloudConfig(), node_id="cloud-1", bus=mosquitto.bus_config(), model_store=str(store),
                                 state_dir=str(tmp_path / "state"), heartbeat_interval_s=0.5)
    service = CloudService(config).start()
    yield service
    service.stop()


def ask(edge, mode):
    body = {"task_type": "SG", "model_name": "tiny-exits", "prompt": "word " * 12, "wait": True, "max_new_tokens": 12,
            "mode": mode}
    response = httpx.post(f"{edge.http.url}/perform_task", json=body, timeout=60)
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "ok", result["error"]
    return result


def test_every_mode_answers_and_records_who_decided_each_token(edge, cloud):
    cloud_only = ask(edge, "cloud_only")
    assert {t["decided_by"] for t in cloud_only["tokens"]} == {"cloud"}
    naive = ask(edge, "naive_split")
    collaborative = ask(edge, "collaborative")
    assert [t["token_id"] for t in naive["tokens"]] == [t["token_id"] for t in cloud_only["tokens"]]
    assert {t["decided_by"] for t in collaborative["tokens"]} <= {"exit", "cloud"}
    assert sum(t["bytes_up"] for t in naive["tokens"]) > sum(t["bytes_up"] for t in collaborative["tokens"])


def test_collaborative_task_finishes_locally_without_a_cloud(edge):
    result = ask(edge, "collaborative")
    assert result["tokens"] and {t["decided_by"] for t in result["tokens"]} <= {"exit", "head"}


def test_speculative_task_over_http_equals_cloud_only(edge, cloud):
    cloud_only = ask(edge, "cloud_only")
    speculative = ask(edge, "speculative")
    assert [t["token_id"] for t in speculative["tokens"]] == [t["token_id"] for t in cloud_only["tokens"]]
    # the whole model drafts: the first token is the cloud's, every later one a verified draft
    assert speculative["tokens"][0]["decided_by"] == "cloud"
    assert {t["decided_by"] for t in speculative["tokens"][1:]} <= {"draft_accepted", "draft_corrected"}
    assert speculative["answer"] == cloud_only["answer"]
