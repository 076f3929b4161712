"""Model deployment end to end: the center publishes deploy_model over a real Mosquitto, the edge's
handler (wired as EdgeService will wire it) downloads from the artifact server and reports on
`models/{node}/status`; the installed tiny model then loads from the edge's store."""

import threading
import time

import pytest

from broker import topics
from broker.client import BusClient
from broker.messages import Capabilities, CenterState, ModelStatus
from broker.presence import NodePresence
from edge_node.deployer import DeployConfig, ModelDeployer, bus_status_publisher
from fleet_center.artifacts import ArtifactServer
from models.store import ModelStore
from models.tiny import write_tiny_model
from tests.conftest import wait_until

CAPS = Capabilities(cores=2, memory_bytes=1 << 30, gflops=1.0)
EDGE = "pi-01"


class StatusLog:
    def __init__(self) -> None:
        self.statuses: list[ModelStatus] = []
        self.lock = threading.Lock()

    def add(self, envelope) -> None:
        with self.lock:
            self.statuses.append(envelope.message)

    def final(self, command_id: str) -> ModelStatus | None:
        with self.lock:
            return next((s for s in self.statuses if s.command_id == command_id and s.state in ("ready", "failed")), None)


@pytest.fixture
def fleet(mosquitto, tmp_path):
    center_store = tmp_path / "center-models"
    write_tiny_model(center_store, "tiny-a", seed=1)
    edge_store = tmp_path / "edge-models"
    log = StatusLog()
    births = threading.Event()
    center = BusClient("center", mosquitto.bus_config("center"))
    center.subscribe(topics.MODEL_STATUS, log.add)
    center.subscribe(topics.NODE_BIRTH, lambda envelope: births.set(), node=EDGE)
    center.connect()
    center.publish(topics.CENTER_STATE, CenterState(online=True, center_id="center", timestamp=time.time()), wait_s=5)
    edge = NodePresence(EDGE, "edge", mosquitto.bus_config(), heartbeat_interval_s=5, state_dir=tmp_path,
                        capabilities=CAPS)
    deployer = ModelDeployer(EDGE, edge_store, bus_status_publisher(edge.bus), DeployConfig(backoff_initial_s=0.05))
    edge.command_handlers["deploy_model"] = deployer.handle
    edge.start()
    artifacts = ArtifactServer(center_store).start()
    # The birth travels on the edge's connection after its cmd SUBSCRIBE: once the center sees it, a
    # command published now cannot miss the subscription.
    try:
        assert births.wait(10), "edge never published its birth"
        yield center, artifacts, edge_store, log
    finally:
        artifacts.stop()
        deployer.close()
        edge.stop()
        center.close()


def test_deploy_command_over_mqtt_installs_a_model_that_loads(fleet):
    center, artifacts, edge_store, log = fleet
    command = artifacts.deploy_command("tiny-a", command_id="deploy-1")
    center.publish(topics.NODE_COMMAND, command, wait_s=5, node=EDGE)
    assert wait_until(lambda: log.final("deploy-1") is not None, 30)
    final = log.final("deploy-1")
    assert final.state == "ready", final.reason
    states = [s.state for s in log.statuses if s.command_id == "deploy-1"]
    assert states[0] == "downloading" and "verifying" in states
    loaded = ModelStore(edge_store).load("tiny-a", verify=True)
    assert loaded.manifest.id == "tiny-a"
    assert ModelStore(edge_store).list() == ["tiny-a"]


def test_tampered_model_is_reported_failed_over_mqtt_and_not_installed(fleet):
    center, artifacts, edge_store, log = fleet
    command = artifacts.deploy_command("tiny-a", command_id="deploy-2")
    weights = artifacts.store_root / "tiny-a" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    center.publish(topics.NODE_COMMAND, command, wait_s=5, node=EDGE)
    assert wait_until(lambda: log.final("deploy-2") is not None, 30)
    final = log.final("deploy-2")
    assert final.state == "failed" and "model.safetensors" in final.reason
    assert ModelStore(edge_store).list() == []
