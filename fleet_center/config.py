"""The center's configuration: one frozen dataclass, every field with a default that runs locally."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.settings import FLEET_DIR, BusConfig, check


@dataclass(frozen=True)
class CenterConfig:
    center_id: str = "center"  # the center's client id and broker user
    bus: BusConfig = field(default_factory=BusConfig)
    heartbeat_timeout_s: float = 6.0  # a node silent this long is offline (its Last Will usually comes first)
    tick_interval_s: float = 0.5  # how often silence is checked
    state_dir: str = str(FLEET_DIR / "center")  # SQLite state and logs

    def __post_init__(self) -> None:
        check(bool(self.center_id), "center_id", "must not be empty")
        check(self.heartbeat_timeout_s > 0, "heartbeat_timeout_s", "must be > 0")
        check(0 < self.tick_interval_s <= self.heartbeat_timeout_s, "tick_interval_s", "must be > 0 and <= heartbeat_timeout_s")
