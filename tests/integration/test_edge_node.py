"""The edge node end to end: real Mosquitto, real HTTP, a tiny real Llama in a real model store."""

import dataclasses
import threading

import httpx
import pytest

from broker import topics
from broker.client import BusClient
from broker.messages import TaskDispatch, TaskSpec
from edge_node.config import EdgeConfig
from edge_node.metrics_csv import read_rows
from edge_node.service import EdgeService
from models.tiny import write_tiny_model
from runtime.settings import load
from tests.conftest import wait_until


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    write_tiny_model(root, "tiny-llama", seed=0)
    write_tiny_model(root, "tiny-exits", seed=1, exit_layers=(2,))
    return root


@pytest.fixture
def edge(mosquitto, store, tmp_path):
    config = load(EdgeConfig, env={}, overrides=[
        "node_id=pi-01", f"model_store={store}", f"state_dir={tmp_path / 'state'}", "http_port=0",
        "queue_capacity=2", "keep_alive_s=60", "heartbeat_interval_s=0.5",
    ])
    config = type(config)(**{**config.__dict__, "bus": mosquitto.bus_config()})
    service = EdgeService(config).start()
    yield service
    service.stop()


def post(edge, body, **kwargs):
    return httpx.post(f"{edge.http.url}/perform_task", json=body, timeout=30, **kwargs)


def test_perform_task_in_the_original_shape_returns_a_result(edge):
    response = post(edge, {"task_type": "TC", "model_name": "tiny-llama", "prompt": "I love this!", "wait": True})
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "ok"
    assert result["node_id"] == "pi-01"
    assert len(result["tokens"]) >= 1
    assert result["load_time_s"] > 0  # cold: the model was loaded for this task
    assert "label" in result["parsed"]


def test_unknown_task_type_runs_as_plain_chat(edge):
    response = post(edge, {"task_type": "arithmetic", "model_name": "tiny-llama", "prompt": "What is 2+2?", "wait": True,
                           "max_new_tokens": 5})
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_task_id_can_be_polled(edge):
    response = post(edge, {"task_type": "QA", "model_name": "tiny-llama", "prompt": "Context: Sky.\nQuestion: What?"})
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert wait_until(lambda: httpx.get(f"{edge.http.url}/tasks/{task_id}").status_code == 200, 20)
    assert httpx.get(f"{edge.http.url}/tasks/{task_id}").json()["status"] == "ok"
    assert httpx.get(f"{edge.http.url}/tasks/nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
        (b'{"model_name": "tiny-llama", "prompt": "x"}', 400, "task_type"),
        (b'{"task_type": "TC", "model_name": "tiny-llama"}', 400, "prompt"),
        (b'{"task_type": "TC", "model_name": "tiny-llama", "prompt": "x", "max_new_tokens": -3}', 400, "max_new_tokens"),
        (b'{"task_type": "TC", "model_name": "tiny-llama", "prompt": "x", "colour": 1}', 400, "unknown fields"),
        (b'{"task_type": "TC", "model_name": "gpt-9", "prompt": "x"}', 404, "gpt-9"),
    ],
)
def test_bad_requests_get_a_clear_error(edge, body, status, fragment):
    response = httpx.post(f"{edge.http.url}/perform_task", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert fragment in response.json()["error"]


def test_oversized_body_is_refused(edge):
    response = post(edge, {"task_type": "TC", "model_name": "tiny-llama", "prompt": "x" * 300_000})
    assert response.status_code == 413


def test_full_queue_refuses_with_503_and_loses_nothing(edge):
    body = {"task_type": "SG", "model_name": "tiny-llama", "prompt": "long " * 50, "max_new_tokens": 128}
    responses = [post(edge, body) for _ in range(12)]
    codes = [r.status_code for r in responses]
    assert 503 in codes
    assert all(code in (202, 503) for code in codes)
    accepted = [r.json()["task_id"] for r in responses if r.status_code == 202]
    assert wait_until(lambda: all(httpx.get(f"{edge.http.url}/tasks/{t}").status_code == 200 for t in accepted), 60)


def test_health_and_ps_show_loaded_model(edge):
    post(edge, {"task_type": "TC", "model_name": "tiny-llama", "prompt": "hello", "wait": True})
    health = httpx.get(f"{edge.http.url}/health").json()
    assert health["status"] == "ok" and health["bus_connected"]
    models = httpx.get(f"{edge.http.url}/api/ps").json()["models"]
    assert [m["name"] for m in models] == ["tiny-llama"]
    assert models[0]["size"] > 0 and models[0]["expires_at"]


def test_health_is_degraded_without_the_bus_and_503_without_a_worker(edge, mosquitto):
    healthy = httpx.get(f"{edge.http.url}/health")
    assert healthy.status_code == 200 and healthy.json()["worker_alive"] and healthy.json()["gflops"] > 0
    mosquitto.broker.stop()
    assert wait_until(lambda: httpx.get(f"{edge.http.url}/health").json()["status"] == "degraded", 10)
    assert httpx.get(f"{edge.http.url}/health").status_code == 200  # HTTP tasks still run locally
    edge.stop_worker()
    assert wait_until(lambda: httpx.get(f"{edge.http.url}/health").status_code == 503, 5)
    body = httpx.get(f"{edge.http.url}/health").json()
    assert body["status"] == "unavailable" and "node is stopping" in body["problems"]


def test_keep_alive_zero_unloads_after_the_task(edge):
    post(edge, {"task_type": "TC", "model_name": "tiny-llama", "prompt": "hi", "wait": True, "keep_alive_s": 0})
    assert wait_until(lambda: httpx.get(f"{edge.http.url}/api/ps").json()["models"] == [], 5)


def test_early_exit_records_exit_layers(edge):
    result = post(edge, {"task_type": "SG", "model_name": "tiny-exits", "prompt": "text " * 10, "wait": True,
                         "max_new_tokens": 8}).json()
    assert result["status"] == "ok"
    assert {(t["decided_by"], t["layer"]) for t in result["tokens"]} <= {("exit", 2), ("head", 4)}


def test_mqtt_dispatch_round_trip_and_csv(mosquitto, edge):
    results = []
    got_all = threading.Event()
    with BusClient("center", mosquitto.bus_config("center")) as center:
        def on_result(envelope):
            results.append(envelope.message)
            if len(results) == 3:
                got_all.set()

        center.subscribe(topics.TASK_RESULT, on_result)
        wait_until(lambda: False, 0.2)
        tasks = (
            TaskSpec(task_id="r1-a", task_type="TC", prompt="So happy", model_id="tiny-llama", round_id=1),
            TaskSpec(task_id="r1-b", task_type="NER", prompt="Ann lives in Paris", model_id="tiny-llama", round_id=1),
            TaskSpec(task_id="r1-c", task_type="TC", prompt="x", model_id="missing-model", round_id=1),
        )
        center.publish(topics.TASK_DISPATCH, TaskDispatch(round_id=1, tasks=tasks, sent_at=0.0), node="pi-01")
        assert got_all.wait(30)
    by_id = {r.task_id: r for r in results}
    assert by_id["r1-a"].status == "ok" and by_id["r1-a"].round_id == 1
    assert by_id["r1-b"].status == "ok" and len(by_id["r1-b"].parsed["tags"]) == 4
    assert by_id["r1-c"].status == "refused" and "missing-model" in by_id["r1-c"].error
    rows = read_rows(edge.executor.csv.path)
    assert {row.task_id for row in rows} >= {"r1-a", "r1-b", "r1-c"}
    ok_row = next(row for row in rows if row.task_id == "r1-a")
    assert ok_row.status == "ok" and ok_row.tokens >= 1 and ok_row.total_latency_s > 0


def test_node_survives_garbage_dispatches_and_a_corrupt_model(mosquitto, edge, store):
    (store / "tiny-exits" / "model.safetensors").write_bytes(b"corrupted")
    with BusClient("center", mosquitto.bus_config("center")) as center:
        for payload in (b"", b"\x00\x01", b"\x81\xa1t\xadtask_dispatch", b"y" * 100_000):
            center.publish_bytes(topics.TASK_DISPATCH.topic(node="pi-01"), payload, wait_s=5)
    assert wait_until(lambda: edge.presence.bus.stats.counts["malformed"] >= 3, 5)
    broken = post(edge, {"task_type": "TC", "model_name": "tiny-exits", "prompt": "x", "wait": True})
    assert broken.json()["status"] == "error"
    assert "tiny-exits" in broken.json()["error"]
    fine = post(edge, {"task_type": "TC", "model_name": "tiny-llama", "prompt": "x", "wait": True})
    assert fine.json()["status"] == "ok"


def test_stop_lets_the_running_task_end_and_report(mosquitto, edge):
    # Stopping with the worker still inside torch let the interpreter exit under it (a C++ abort).
    # The wait is generous: on a loaded 2-core machine 400 tiny-model tokens took over the default 8 s.
    edge.config = dataclasses.replace(edge.config, stop_wait_s=60.0)
    results = []
    with BusClient("center", mosquitto.bus_config("center")) as center:
        center.subscribe(topics.TASK_RESULT, lambda env: results.append(env.message), wait_s=5, node="pi-01")
        task = TaskSpec(task_id="long", task_type="chat", prompt="Tell me a long story.", model_id="tiny-llama",
                        round_id=1, max_new_tokens=400)
        center.publish(topics.TASK_DISPATCH, TaskDispatch(round_id=1, tasks=(task,), sent_at=0.0), node="pi-01")
        assert wait_until(lambda: edge.results.get("long") == "running", 10)
        edge.stop()
        assert not edge._threads[0].is_alive()
        assert wait_until(lambda: results, 5)
    assert results[0].task_id == "long"
    assert results[0].status == "ok"
