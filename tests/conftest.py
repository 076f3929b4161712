"""Shared fixtures: a real Mosquitto on a free port with the fleet's generated passwords and ACLs."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see edge_node/__main__.py)

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.config import BusConfig
from broker.launcher import BrokerConfig, LocalBroker, free_port

EDGE_USERS = ("pi-01", "pi-02", "pi-03")
CLOUD_USERS = ("cloud-1", "cloud-2")


@dataclass
class RunningBroker:
    broker: LocalBroker
    secrets_dir: Path

    @property
    def port(self) -> int:
        return self.broker.config.port

    def bus_config(self, user: str | None = None, **changes: object) -> BusConfig:
        """Bus settings for `user` (its password file in this broker's secrets), fast timeouts for tests."""
        config = BusConfig(
            port=self.port,
            password_file=str(self.secrets_dir / "{node}.password"),
            keepalive_s=2,
            connect_timeout_s=5.0,
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
        )
        config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]
        return config.for_node(user) if user else config


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[RunningBroker]:
    config = BrokerConfig(
        port=free_port(),
        state_dir=str(tmp_path / "broker"),
        secrets_dir=str(tmp_path / "secrets"),
        edge_users=EDGE_USERS,
        cloud_users=CLOUD_USERS,
    )
    broker = LocalBroker(config).start()
    try:
        yield RunningBroker(broker, tmp_path / "secrets")
    finally:
        broker.stop()


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.02) -> bool:
    """Poll `condition` until truthy or the timeout passes; returns whether it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())
