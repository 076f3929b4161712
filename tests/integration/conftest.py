"""Fixtures for the recorder and dashboard tests: real InfluxDB 1.x and VictoriaMetrics servers on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics.launcher import LocalInfluxDB, LocalVictoriaMetrics, ServerConfig, free_port
from tests.integration.metrics_servers import RunningInflux, start_influxd


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningInflux]:
    """One influxd per test module (it starts in a fraction of a second, but 2 cores are shared)."""
    server = start_influxd(tmp_path_factory.mktemp("influxd"))
    try:
        yield RunningInflux(server)
    finally:
        server.stop()


@pytest.fixture
def own_influxd(tmp_path: Path) -> Iterator[LocalInfluxDB]:
    """An influxd of this test alone, which it may stop and start."""
    server = start_influxd(tmp_path / "influxd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalVictoriaMetrics]:
    server = LocalVictoriaMetrics(
        ServerConfig(port=free_port(), data_dir=str(tmp_path_factory.mktemp("vm")), binary="victoria-metrics")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store_collab_client(mosquitto, tmp_path: Path) -> Iterator[object]:
    """A cloud worker on the project's model store and pi-01's CollabClient to it, over the real broker."""
    from broker.client import BusClient
    from cloud_node.config import CloudConfig
    from cloud_node.service import CloudService
    from edge_node.collab.link import CollabClient
    from models.paths import default_store_root

    cloud = CloudService(CloudConfig(node_id="cloud-1", bus=mosquitto.bus_config(), model_store=str(default_store_root()),
                                     state_dir=str(tmp_path / "state"), heartbeat_interval_s=1.0)).start()
    bus = BusClient("pi-01", mosquitto.bus_config("pi-01")).connect()
    yield CollabClient(bus, "pi-01")
    bus.close()
    cloud.stop()
