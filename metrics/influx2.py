"""InfluxDB 2.x through `influxdb-client`: line protocol to a bucket, Flux queries back.

Writes go to `/api/v2/write`, which servers other than InfluxDB 2.x accept too (VictoriaMetrics,
InfluxDB 3); the tests write to a real VictoriaMetrics. Queries use Flux, which only InfluxDB 2.x
speaks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pandas as pd
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.write_api import SYNCHRONOUS
from urllib3.exceptions import HTTPError as TransportError

from broker.messages.metrics import MetricPoint
from metrics.config import StoreConfig
from metrics.errors import StoreRejectedError, StoreUnavailableError
from metrics.line_protocol import encode
from metrics.store import frame

logger = logging.getLogger(__name__)

_FLUX_META = ("result", "table", "_start", "_stop", "_measurement")
# What influxdb-client raises for the server's answers (InfluxDBError, ApiException) and the network
# (urllib3, sockets); anything else is a bug and should not be retried as if the server were down.
_CLIENT_ERRORS = (InfluxDBError, TransportError, OSError)


def flux_string(value: str) -> str:
    """A Flux string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _rfc3339(timestamp_ns: int) -> str:
    seconds, nanos = divmod(int(timestamp_ns), 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def flux_query(bucket: str, measurement: str, start_ns: int, stop_ns: int, tags: Mapping[str, str], limit: int) -> str:
    """One measurement's points with fields pivoted into columns, newest `limit` rows."""
    filters = [f"r._measurement == {flux_string(measurement)}"]
    filters += [f"r[{flux_string(key)}] == {flux_string(value)}" for key, value in tags.items()]
    return "\n".join(
        [
            f"from(bucket: {flux_string(bucket)})",
            f"  |> range(start: {_rfc3339(start_ns)}, stop: {_rfc3339(stop_ns)})",
            f"  |> filter(fn: (r) => {' and '.join(filters)})",
            # Fields arrive as one table per (series, field); pivot rejoins a point's fields in one row.
            '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
            "  |> group()",
            '  |> sort(columns: ["_time"], desc: true)',
            f"  |> limit(n: {int(limit)})",
        ]
    )


class Influx2Store:
    """Writes to and queries one bucket of an InfluxDB 2.x-compatible server."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self._client = InfluxDBClient(
            url=config.url, token=config.token or None, org=config.org, timeout=int(config.timeout_s * 1000),
            retries=0,  # the recorder retries with its own backoff and counts what it drops
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def close(self) -> None:
        self._client.close()

    def ensure_database(self) -> None:
        """Buckets are created by the server's operator (they carry retention and permissions): nothing to do."""

    def write(self, points: Sequence[MetricPoint]) -> None:
        """Write points in one request. Raises StoreUnavailableError (no answer, 5xx), StoreRejectedError (4xx)."""
        body = encode(points)
        if not body:
            return
        try:
            self._write_api.write(bucket=self.config.bucket, org=self.config.org, record=body, write_precision=WritePrecision.NS)
        except _CLIENT_ERRORS as error:
            raise _store_error(self.config.url, error) from error

    def query(
        self, measurement: str, start_ns: int, stop_ns: int, *, tags: Mapping[str, str] | None = None, limit: int = 50_000
    ) -> pd.DataFrame:
        """The newest `limit` points of `measurement` in [start_ns, stop_ns), oldest first. Raises StoreError."""
        flux = flux_query(self.config.bucket, measurement, start_ns, stop_ns, dict(tags or {}), limit)
        try:
            tables = self._client.query_api().query(flux, org=self.config.org)
        except _CLIENT_ERRORS as error:
            raise _store_error(self.config.url, error) from error
        rows: list[dict[str, object]] = []
        for table in tables:
            for record in table.records:
                row = {key: value for key, value in record.values.items() if key not in _FLUX_META}
                row["time"] = pd.Timestamp(row.pop("_time")).value
                rows.append(row)
        return frame(rows)


def _store_error(url: str, error: Exception) -> StoreRejectedError | StoreUnavailableError:
    """Map influxdb-client's and urllib3's exceptions onto the store's two kinds."""
    status = getattr(error, "status", None)
    message = f"influx2 at {url}: {type(error).__name__}: {error}"
    if isinstance(status, int) and 400 <= status < 500:
        return StoreRejectedError(message)
    # Connection refused, timeouts (urllib3) and 5xx answers (InfluxDBError/ApiException): try again later.
    return StoreUnavailableError(message)
