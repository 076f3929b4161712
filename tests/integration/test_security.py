"""Security against a real Mosquitto: TLS with the fleet CA, revoked passwords, ACLs between edges, the cloud's
session owner check and the edge HTTP token (docs/security.md)."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import httpx
import pytest

from broker import topics
from broker.client import BusClient
from broker.errors import BusError
from broker.launcher import BrokerConfig, LocalBroker, free_port
from broker.messages import ModelStatus, NodeCommand, TaskDispatch, TaskResult, TaskSpec
from broker.messages.inference import ContextChunk, RequestRefused, SessionOpen, SessionOpened, SessionUnknown
from edge_node.config import EdgeConfig
from edge_node.service import EdgeService
from models.tiny import write_tiny_model
from tests.conftest import CLOUD_USERS, EDGE_USERS, RunningBroker, wait_until

FORGED_RESULT = TaskResult(task_id="r0-pi-01-0", node_id="pi-01", status="ok", answer="forged")


def connect(mosquitto, user):
    return BusClient(user, mosquitto.bus_config(user)).connect()


@pytest.fixture
def tls_broker(tmp_path: Path):
    """A broker whose TLS listener requires a client certificate of the fleet CA (besides the password)."""
    config = BrokerConfig(port=free_port(), tls_port=free_port(), tls_client_certs=True,
                          state_dir=str(tmp_path / "broker"), secrets_dir=str(tmp_path / "secrets"),
                          tls_dir=str(tmp_path / "tls"), edge_users=EDGE_USERS, cloud_users=CLOUD_USERS)
    broker = LocalBroker(config).start()
    try:
        yield RunningBroker(broker, tmp_path / "secrets")
    finally:
        broker.stop()


def tls_config(tls_broker, user, with_cert=True):
    tls = Path(tls_broker.broker.config.tls_dir)
    config = tls_broker.bus_config(None, port=tls_broker.broker.config.tls_port, tls_ca_file=str(tls / "ca.crt"),
                                   tls_cert_file=str(tls / "{node}.crt") if with_cert else "",
                                   tls_key_file=str(tls / "{node}.key") if with_cert else "")
    return config.for_node(user)


def test_node_with_fleet_certificate_talks_over_tls(tls_broker):
    received = []
    with BusClient("center", tls_config(tls_broker, "center")) as center, \
            BusClient("pi-01", tls_config(tls_broker, "pi-01")) as edge:
        center.subscribe(topics.MODEL_STATUS, received.append, wait_s=5)
        edge.publish(topics.MODEL_STATUS, ModelStatus(node_id="pi-01", model_id="m", state="ready"), wait_s=5,
                     node="pi-01")
        assert wait_until(lambda: received)


def test_tls_listener_refuses_a_node_without_a_client_certificate(tls_broker):
    with pytest.raises(BusError):
        BusClient("pi-01", tls_config(tls_broker, "pi-01", with_cert=False)).connect(timeout_s=2)


def test_tls_client_refuses_a_broker_outside_the_fleet_ca(tls_broker, tmp_path):
    from security.tls import ensure_ca

    other = ensure_ca(tmp_path / "other-ca")
    config = dataclasses.replace(tls_config(tls_broker, "pi-01"), tls_ca_file=str(other.cert))
    with pytest.raises(BusError):
        BusClient("pi-01", config).connect(timeout_s=2)


def test_revoked_password_is_refused_at_once(mosquitto):
    edge = connect(mosquitto, "pi-03")
    try:
        mosquitto.broker.revoke("pi-03")
        assert wait_until(lambda: not edge.connected, 3)  # the live session is dropped on reload
    finally:
        edge.abort()
    with pytest.raises(BusError, match="refused"):
        BusClient("pi-03", mosquitto.bus_config("pi-03")).connect(timeout_s=3)
    connect(mosquitto, "pi-02").close()  # everyone else still gets in


def test_edge_cannot_read_another_edges_commands(mosquitto):
    stolen = []
    with connect(mosquitto, "center") as center, connect(mosquitto, "pi-01") as spy:
        try:
            spy.subscribe(topics.NODE_COMMAND, stolen.append, node="pi-02", wait_s=5)
        except BusError:
            pass  # refused in the SUBACK: equally safe
        center.publish(topics.NODE_COMMAND, NodeCommand(command_id="c1", kind="drain"), wait_s=5, node="pi-02")
        wait_until(lambda: stolen, 0.5)
    assert stolen == []


def test_edge_cannot_read_another_edges_dispatches(mosquitto):
    stolen = []
    dispatch = TaskDispatch(round_id=1, tasks=(TaskSpec(task_id="t1", task_type="QA", prompt="p", model_id="m"),),
                            sent_at=0.0)
    with connect(mosquitto, "center") as center, connect(mosquitto, "pi-01") as spy:
        try:
            spy.subscribe(topics.TASK_DISPATCH, stolen.append, wait_s=5)  # every edge's dispatches
        except BusError:
            pass
        center.publish(topics.TASK_DISPATCH, dispatch, wait_s=5, node="pi-02")
        wait_until(lambda: stolen, 0.5)
    assert stolen == []


def test_edge_cannot_deploy_models_or_report_another_edges_deploys(mosquitto):
    commands, statuses = [], []
    deploy = NodeCommand(command_id="d1", kind="deploy_model", model_id="evil", sha256="0" * 64, url="http://x/i.json")
    with connect(mosquitto, "center") as center, connect(mosquitto, "pi-02") as victim, \
            connect(mosquitto, "pi-01") as attacker:
        victim.subscribe(topics.NODE_COMMAND, commands.append, node="pi-02", wait_s=5)
        center.subscribe(topics.MODEL_STATUS, statuses.append, wait_s=5)
        attacker.publish(topics.NODE_COMMAND, deploy, node="pi-02")
        attacker.publish(topics.MODEL_STATUS, ModelStatus(node_id="pi-02", model_id="evil", state="ready"),
                         node="pi-02")
        attacker.publish(topics.MODEL_STATUS, ModelStatus(node_id="pi-01", model_id="m", state="ready"), node="pi-01")
        assert wait_until(lambda: statuses)  # pi-01's own status arrives: the forged ones would have too
        wait_until(lambda: False, 0.3)
    assert commands == []
    assert [s.params["node"] for s in statuses] == ["pi-01"]


def test_edge_cannot_write_into_or_read_another_edges_session(mosquitto):
    uploads, stolen = [], []
    session = uuid.uuid4().hex
    chunk = ContextChunk(session_id=session, worker_id="cloud-1", seq=0, first_position=0, count=1,
                         hidden_size=4, data=b"\0" * 8)
    with connect(mosquitto, "cloud-1") as cloud, connect(mosquitto, "pi-01") as attacker:
        cloud.subscribe(topics.INFER_UP, uploads.append, wait_s=5)
        try:
            attacker.subscribe(topics.INFER_DOWN, stolen.append, edge="pi-02", wait_s=5)
        except BusError:
            pass
        attacker.publish(topics.INFER_UP, chunk, edge="pi-02", session=session)
        attacker.publish(topics.INFER_UP, chunk, edge="pi-01", session=session)
        assert wait_until(lambda: uploads)
        cloud.publish(topics.INFER_DOWN, SessionUnknown(session, -1, "x"), wait_s=5, edge="pi-02", session=session)
        wait_until(lambda: False, 0.3)
    assert [u.params["edge"] for u in uploads] == ["pi-01"]
    assert stolen == []


def test_cloud_refuses_a_session_opened_in_another_edges_name(mosquitto, tmp_path):
    from cloud_node.config import CloudConfig
    from cloud_node.service import CloudService

    write_tiny_model(tmp_path / "store", "tiny-llama", seed=0)
    cloud = CloudService(CloudConfig(node_id="cloud-1", bus=mosquitto.bus_config(), model_store=str(tmp_path / "store"),
                                     state_dir=str(tmp_path / "state"), heartbeat_interval_s=0.5)).start()
    try:
        with connect(mosquitto, "pi-01") as attacker:
            wait_until(lambda: False, 0.3)  # the cloud's shared subscription is in place
            forged = SessionOpen(session_id="s-forged", edge_id="pi-02", model_id="tiny-llama", split_layer=1,
                                 hidden_size=64)
            reply = attacker.request(topics.INFER_OPEN, forged, timeout_s=10).message
            own = dataclasses.replace(forged, session_id="s-own", edge_id="pi-01")
            opened = attacker.request(topics.INFER_OPEN, own, timeout_s=30).message
    finally:
        cloud.stop()
    assert isinstance(reply, RequestRefused) and "pi-02" in reply.reason
    assert isinstance(opened, SessionOpened)


@pytest.fixture
def lan_edge(mosquitto, tmp_path):
    write_tiny_model(tmp_path / "store", "tiny-llama", seed=0)
    config = EdgeConfig(node_id="pi-01", bus=mosquitto.bus_config(), model_store=str(tmp_path / "store"),
                        state_dir=str(tmp_path / "state"), http_host="0.0.0.0", http_port=0,
                        http_token_file=str(tmp_path / "secrets" / "{node}.http_token"))
    service = EdgeService(config).start()
    yield service
    service.stop()


def test_edge_http_api_beyond_loopback_requires_its_token(lan_edge, tmp_path):
    url = f"http://127.0.0.1:{lan_edge.http.port}"
    token = (tmp_path / "secrets" / "pi-01.http_token").read_text().strip()
    assert httpx.get(f"{url}/api/ps", timeout=10).status_code == 401
    assert httpx.get(f"{url}/api/ps", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert httpx.get(f"{url}/api/ps", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # probes need no token
    assert lan_edge._counters()["http_rejected"] == 2


def test_center_ignores_results_and_statuses_naming_another_node_than_their_topic(mosquitto, tmp_path):
    from fleet_center.service import CenterService
    from tests.integration.test_rounds import center_config

    write_tiny_model(tmp_path / "store", "tiny-a", seed=0, layers=2, hidden=64)
    write_tiny_model(tmp_path / "store", "tiny-b", seed=1, layers=2, hidden=32)
    config = center_config(mosquitto, tmp_path / "store", tmp_path, total_rounds=1)
    center = CenterService(dataclasses.replace(config, rounds=dataclasses.replace(config.rounds, min_edges=9))).start()
    statuses = []
    center.rounds.status_listeners.append(statuses.append)
    try:
        with connect(mosquitto, "pi-02") as liar:
            wait_until(lambda: False, 0.3)
            liar.publish(topics.TASK_RESULT, FORGED_RESULT, wait_s=5, node="pi-02")
            liar.publish(topics.MODEL_STATUS, ModelStatus(node_id="pi-01", model_id="tiny-b", state="ready"), wait_s=5,
                         node="pi-02")
            liar.publish(topics.MODEL_STATUS, ModelStatus(node_id="pi-02", model_id="tiny-b", state="ready"), wait_s=5,
                         node="pi-02")
            assert wait_until(lambda: statuses)  # its own status is taken
        wait_until(lambda: False, 0.3)
        assert [s.node_id for s in statuses] == ["pi-02"]
        assert center.membership.bus.stats.counts["malformed"] == 2
    finally:
        center.stop()


def test_revocation_from_the_command_line_reaches_the_running_broker_and_survives_a_restart(mosquitto):
    from broker.__main__ import main as broker_main

    config = mosquitto.broker.config
    edge = connect(mosquitto, "pi-02")
    try:
        code = broker_main(["--set", f"port={config.port}", "--set", f"state_dir={config.state_dir}",
                            "--set", f"secrets_dir={config.secrets_dir}", "--set", "edge_users=pi-01,pi-02,pi-03",
                            "--set", "cloud_users=cloud-1,cloud-2", "--revoke", "pi-02"])
        assert code == 0
        assert wait_until(lambda: not edge.connected, 3)
    finally:
        edge.abort()
    mosquitto.broker.restart()
    with pytest.raises(BusError, match="refused"):
        BusClient("pi-02", mosquitto.bus_config("pi-02")).connect(timeout_s=3)
    connect(mosquitto, "pi-01").close()
