"""Real InfluxDB 1.x servers on free ports for the recorder and dashboard tests (helpers; fixtures in conftest.py)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from metrics.config import StoreConfig
from metrics.launcher import LocalInfluxDB, ServerConfig, free_port
from metrics.store import MetricStore, open_store

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
