"""InfluxDB 1.x over its HTTP API: `/write` line protocol, `/query` InfluxQL (Debian's `influxdb`, the local default)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import httpx
import pandas as pd

from broker.messages.metrics import MetricPoint
from metrics.config import StoreConfig
from metrics.errors import StoreRejectedError, StoreUnavailableError
from metrics.line_protocol import encode
from metrics.store import frame

logger = logging.getLogger(__name__)


def quote_identifier(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Influx1Store:
    """Writes and queries one database of an InfluxDB 1.x server."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self._http = httpx.Client(base_url=config.url, timeout=config.timeout_s)

    def close(self) -> None:
        self._http.close()

    def ensure_database(self) -> None:
        """CREATE DATABASE (a no-op if it exists). Raises StoreUnavailableError, StoreRejectedError."""
        self._post("/query", params={"q": f"CREATE DATABASE {quote_identifier(self.config.db)}"})
        logger.info("influx database %s ready at %s", self.config.db, self.config.url)

    def write(self, points: Sequence[MetricPoint]) -> None:
        """Write points in one request, creating the database if the server lost it.

        Raises StoreUnavailableError (no answer, timeout, 5xx), StoreRejectedError (4xx).
        """
        body = encode(points)
        if not body:
            return
        params = {"db": self.config.db, "precision": "ns"}
        try:
            self._post("/write", params=params, content=body.encode())
        except StoreRejectedError as error:
            # A fresh or wiped server has no database yet: create it and write once more.
            if "database not found" not in str(error):
                raise
            self.ensure_database()
            self._post("/write", params=params, content=body.encode())

    def query(
        self, measurement: str, start_ns: int, stop_ns: int, *, tags: Mapping[str, str] | None = None, limit: int = 50_000
    ) -> pd.DataFrame:
        """The newest `limit` points of `measurement` in [start_ns, stop_ns), oldest first. Raises StoreError."""
        conditions = [f"time >= {int(start_ns)}", f"time < {int(stop_ns)}"]
        conditions += [f"{quote_identifier(key)} = {quote_string(value)}" for key, value in (tags or {}).items()]
        statement = (
            f"SELECT * FROM {quote_identifier(measurement)} WHERE {' AND '.join(conditions)} "
            f"ORDER BY time DESC LIMIT {int(limit)}"
        )
        answer = self._post("/query", params={"db": self.config.db, "q": statement, "epoch": "ns"})
        rows: list[dict[str, object]] = []
        for result in answer.get("results", []):
            if "error" in result:
                if "database not found" in result["error"]:
                    return pd.DataFrame()  # nothing recorded yet
                raise StoreRejectedError(f"influx query {statement!r}: {result['error']}")
            for series in result.get("series", []):
                columns = series["columns"]
                rows.extend(dict(zip(columns, values, strict=True)) for values in series["values"])
        return frame(rows)

    def _post(self, path: str, *, params: Mapping[str, str], content: bytes | None = None) -> dict:
        """POST and decode the JSON answer (empty for 204). Raises StoreUnavailableError, StoreRejectedError."""
        try:
            response = self._http.post(path, params=params, content=content)
        except httpx.HTTPError as error:
            raise StoreUnavailableError(f"influx at {self.config.url}: {type(error).__name__}: {error}") from error
        if response.status_code >= 500:
            raise StoreUnavailableError(f"influx at {self.config.url}{path}: HTTP {response.status_code}: {response.text[:300]}")
        if response.status_code >= 400:
            raise StoreRejectedError(f"influx at {self.config.url}{path}: HTTP {response.status_code}: {response.text[:300]}")
        if response.status_code == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError as error:
            raise StoreRejectedError(f"influx at {self.config.url}{path}: answer is not JSON") from error
