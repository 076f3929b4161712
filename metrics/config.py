"""Where metrics are stored and how the recorder batches them: frozen configs, validated once."""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.settings import check

BACKENDS = ("influx1", "influx2")


@dataclass(frozen=True)
class StoreConfig:
    """One InfluxDB to write to and read from."""

    backend: str = "influx1"  # influx1: InfluxDB 1.x HTTP API (the local default); influx2: influxdb-client
    url: str = "http://127.0.0.1:8086"  # base URL of the HTTP API
    db: str = "edgefleet"  # influx1: database (created if missing)
    org: str = "edgefleet"  # influx2: organization
    bucket: str = "edgefleet"  # influx2: bucket
    token: str = ""  # influx2: API token; influx1: unused
    timeout_s: float = 5.0  # per HTTP request; a slow store costs the writer thread this much, never a caller

    def __post_init__(self) -> None:
        check(self.backend in BACKENDS, "store.backend", f"{self.backend!r} is not one of {BACKENDS}")
        check(self.url.startswith(("http://", "https://")), "store.url", f"{self.url!r} is not an http(s) URL")
        check(bool(self.db) and '"' not in self.db, "store.db", "must be a non-empty name without quotes")
        check(bool(self.bucket), "store.bucket", "must not be empty")
        check(self.timeout_s > 0, "store.timeout_s", "must be > 0")


@dataclass(frozen=True)
class RecorderConfig:
    """The recorder's buffer and write loop."""

    store: StoreConfig = field(default_factory=StoreConfig)
    batch_points: int = 5_000  # points per write request
    flush_interval_s: float = 1.0  # write at least this often when anything is buffered
    buffer_points: int = 200_000  # bounded buffer; when full the oldest points are dropped (and counted)
    retry_min_s: float = 0.5  # first retry delay after a failed write; doubles up to retry_max_s
    retry_max_s: float = 15.0
    stop_flush_s: float = 5.0  # on stop, try this long to write what is still buffered
    # Write-ahead spool (metrics/spool.py): every point goes to disk first, so a crash or an outage of the
    # store loses none; bounded like the memory buffer. Empty = memory only (the center sets its own).
    spool_dir: str = ""

    def __post_init__(self) -> None:
        check(1 <= self.batch_points <= 100_000, "recorder.batch_points", "must be 1-100000")
        check(self.flush_interval_s > 0, "recorder.flush_interval_s", "must be > 0")
        check(self.buffer_points >= self.batch_points, "recorder.buffer_points", "must be >= batch_points")
        check(0 < self.retry_min_s <= self.retry_max_s, "recorder.retry_min_s", "must be > 0 and <= retry_max_s")
        check(self.stop_flush_s >= 0, "recorder.stop_flush_s", "must be >= 0")
