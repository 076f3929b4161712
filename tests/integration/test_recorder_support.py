"""Fixtures for the recorder and dashboard tests: real InfluxDB 1.x and VictoriaMetrics servers on free ports.

Imported by test_recorder_*.py and test_dashboard_*.py (this module holds no tests itself).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet_center.recorder.config import StoreConfig
from fleet_center.recorder.launcher import LocalInfluxDB, LocalVictoriaMetrics, ServerConfig, free_port
from fleet_center.recorder.store import MetricStore, open_store

_databases = itertools.count()


@dataclass
class RunningInflux:
    server: LocalInfluxDB

    @property
    def url(self) -> str:
        return self.server.url

    def store_config(self, db: str | None = None, **changes: object) -> StoreConfig:
        """A fresh database name per call keeps tests that share one server apart."""
        return StoreConfig(url=self.url, db=db or f"test{next(_databases)}", timeout_s=2.0, **changes)  # type: ignore[arg-type]

    def store(self, db: str | None = None) -> MetricStore:
        return open_store(self.store_config(db))


def start_influxd(data_dir: Path, port: int | None = None) -> LocalInfluxDB:
    server = LocalInfluxDB(ServerConfig(port=port or free_port(), data_dir=str(data_dir), start_timeout_s=20.0))
    server.start()
    return server


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
