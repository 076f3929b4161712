"""The cloud node's configuration: one frozen dataclass, every field with a default that runs locally."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.messages.membership import valid_node_id
from broker.settings import FLEET_DIR, BusConfig, check


@dataclass(frozen=True)
class CloudConfig:
    node_id: str = "cloud-1"  # this node's id: topic level and broker user
    bus: BusConfig = field(default_factory=BusConfig)
    heartbeat_interval_s: float = 2.0  # how often heartbeats go out
    state_dir: str = str(FLEET_DIR / "nodes")  # bdSeq counter and other small state

    def __post_init__(self) -> None:
        check(valid_node_id(self.node_id), "node_id", f"{self.node_id!r} must be 1-64 of letters, digits, '-', '_', '.'")
        check(0.1 <= self.heartbeat_interval_s <= 3600, "heartbeat_interval_s", "must be between 0.1 and 3600")
