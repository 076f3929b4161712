"""The center's pipeline API over HTTP, with real Mosquitto, real InfluxDB and a tiny model; the CLI's bad input."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from broker.client import BusClient
from fleet_center.pipeline_api import PipelineApiConfig, PipelineHttpServer, PipelineService
from fleet_center.pipeline_cli import main as pipeline_cli
from metrics import schema
from metrics.schema import now_ns
from models.store import ModelStore
from models.tiny import TINY_MODEL_ID, write_tiny_model
from pipeline.node import StageNode, start_stage_node
from tests.conftest import RunningBroker
from tests.integration.metrics_servers import RunningInflux

NODES = ("pi-01", "pi-02")
HOUR_NS = 3600 * 10**9


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    root = tmp_path_factory.mktemp("store")
    write_tiny_model(root, layers=4, hidden=64)
    return ModelStore(root)


@pytest.fixture
def api(mosquitto: RunningBroker, store: ModelStore, influxd: RunningInflux) -> Iterator[tuple[str, object]]:
    stages: list[StageNode] = [start_stage_node(node, mosquitto.bus_config(), store) for node in NODES]
    metric_store = influxd.store()
    metric_store.ensure_database()
    with BusClient("center", mosquitto.bus_config("center")) as bus:
        server = PipelineHttpServer(PipelineService(bus, store, record=metric_store.write), PipelineApiConfig(port=0)).start()
        try:
            yield server.url, metric_store
        finally:
            server.stop()
            for stage in stages:
                stage.stop()


def post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_http_pipeline_returns_text_and_per_node_per_token_figures(api, store) -> None:
    url, _ = api
    status, answer = post(url, {"model_id": TINY_MODEL_ID, "nodes": list(NODES), "allocation": [3, 1],
                                "prompt": "Hello there", "max_new_tokens": 6, "reallocation": {"enabled": False}})
    assert status == 200, answer
    model = store.load(TINY_MODEL_ID)
    assert answer["token_ids"] == model.generate_greedy(model.encode_chat("Hello there"), 6, stop_at_eos=False)
    assert isinstance(answer["text"], str)
    assert {row["node_id"] for row in answer["per_token"]} == set(NODES)


def test_a_run_is_recorded_to_influxdb(api) -> None:
    url, metric_store = api
    status, answer = post(url, {"model_id": TINY_MODEL_ID, "nodes": list(NODES), "prompt": "Hi", "max_new_tokens": 4})
    assert status == 200, answer
    now = now_ns()
    stages = metric_store.query(schema.PIPELINE_STAGE, now - HOUR_NS, now + HOUR_NS, tags={"run": answer["run_id"]})
    allocations = metric_store.query(schema.PIPELINE_ALLOCATION, now - HOUR_NS, now + HOUR_NS, tags={"run": answer["run_id"]})
    assert set(stages["node"]) == set(NODES) and len(stages) == len(answer["per_token"])
    assert sorted(allocations["layers"]) == [2, 2]


def test_bad_allocation_is_a_400_naming_the_problem(api) -> None:
    url, _ = api
    status, answer = post(url, {"model_id": TINY_MODEL_ID, "nodes": list(NODES), "allocation": [3, 3], "prompt": "Hi"})
    assert status == 400 and "places 6 layers" in answer["error"]


def test_unknown_model_is_a_400(api) -> None:
    url, _ = api
    status, answer = post(url, {"model_id": "nope", "nodes": list(NODES), "prompt": "Hi"})
    assert status == 400 and "unknown model" in answer["error"]


def test_body_that_is_not_json_is_a_400(api) -> None:
    url, _ = api
    request = urllib.request.Request(url, b"{not json", {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400


def test_cli_without_a_broker_fails_with_a_clear_error(capsys, store, tmp_path) -> None:
    from broker.launcher import free_port

    code = pipeline_cli(["--port", str(free_port()), "--password-file", str(tmp_path / "none"), "--store", str(store.root),
                         "run", "--nodes", "pi-01", "--prompt", "Hi", "--model", TINY_MODEL_ID])
    assert code == 2 and "python -m fleet_center pipeline:" in capsys.readouterr().err


def test_cli_run_prints_the_answer_as_json(store, mosquitto, capsys) -> None:
    stages = [start_stage_node(node, mosquitto.bus_config(), store) for node in NODES]
    try:
        code = pipeline_cli(["--port", str(mosquitto.port), "--password-file", str(mosquitto.secrets_dir / "{node}.password"),
                             "--store", str(store.root), "run", "--model", TINY_MODEL_ID, "--nodes", ",".join(NODES),
                             "--allocation", "2,2", "--prompt", "Hello there", "--max-new-tokens", "5", "--reallocation", "off"])
        answer = json.loads(capsys.readouterr().out)
        model = store.load(TINY_MODEL_ID)
        assert code == 0
        assert answer["token_ids"] == model.generate_greedy(model.encode_chat("Hello there"), 5, stop_at_eos=False)
        assert [change["layers"] for change in answer["allocations"]] == [[2, 2]]
    finally:
        for stage in stages:
            stage.stop()
