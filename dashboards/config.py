"""The dashboard's configuration: which store to read and how often to refresh, from `EDGEFLEET_DASHBOARD_*`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from metrics.config import StoreConfig
from runtime.settings import check, load


@dataclass(frozen=True)
class DashboardConfig:
    """Environment variables are EDGEFLEET_DASHBOARD_<FIELD>, e.g. EDGEFLEET_DASHBOARD_URL."""

    backend: str = "influx1"  # influx1 (InfluxDB 1.x, InfluxQL) or influx2 (InfluxDB 2.x, Flux)
    url: str = "http://127.0.0.1:8086"  # InfluxDB HTTP API
    db: str = "edgefleet"  # influx1 database
    org: str = "edgefleet"  # influx2 organization
    bucket: str = "edgefleet"  # influx2 bucket
    token: str = ""  # influx2 API token
    timeout_s: float = 5.0  # per query
    refresh_s: float = 5.0  # live pages re-query this often; 0 turns live refresh off
    offline_after_s: float = 15.0  # a node whose last heartbeat is older than this shows as offline
    max_rows: int = 50_000  # newest points per measurement a page reads
    leaderboard_csv: str = ""  # the routing job's leaderboard CSV; "" = docs/leaderboard.csv of this checkout

    def __post_init__(self) -> None:
        check(self.refresh_s >= 0, "dashboard.refresh_s", "must be >= 0")
        check(self.offline_after_s > 0, "dashboard.offline_after_s", "must be > 0")
        check(self.max_rows > 0, "dashboard.max_rows", "must be > 0")

    def store_config(self) -> StoreConfig:
        """The store to read. Raises ConfigError for a bad backend or URL."""
        return StoreConfig(
            backend=self.backend, url=self.url, db=self.db, org=self.org, bucket=self.bucket,
            token=self.token, timeout_s=self.timeout_s,
        )


def load_config(env: Mapping[str, str] | None = None) -> DashboardConfig:
    """Defaults, then EDGEFLEET_DASHBOARD_* variables. Raises ConfigError naming the bad key."""
    config = load(DashboardConfig, env=env, section="dashboard")
    config.store_config()  # validate backend and URL now, with the key in the message
    return config
