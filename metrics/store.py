"""The one small interface both InfluxDB backends implement, and the factory that picks one."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

import pandas as pd

from broker.messages.metrics import MetricPoint
from metrics.config import StoreConfig

logger = logging.getLogger(__name__)


class MetricStore(Protocol):
    """Writes points and reads one measurement back as a DataFrame.

    `query` returns one row per point, oldest first: a `time` column (UTC datetimes), one column
    per tag and one per field; an empty DataFrame if nothing matched or the database does not
    exist yet. Both methods raise StoreUnavailableError or StoreRejectedError.
    """

    config: StoreConfig

    def ensure_database(self) -> None: ...

    def write(self, points: Sequence[MetricPoint]) -> None: ...

    def query(
        self, measurement: str, start_ns: int, stop_ns: int, *, tags: Mapping[str, str] | None = None, limit: int = 50_000
    ) -> pd.DataFrame: ...

    def close(self) -> None: ...


def open_store(config: StoreConfig) -> MetricStore:
    """The backend `config.backend` names (validated by StoreConfig)."""
    if config.backend == "influx2":
        from metrics.influx2 import Influx2Store  # influxdb-client only when configured

        return Influx2Store(config)
    from metrics.influx1 import Influx1Store

    return Influx1Store(config)


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows with a `time` in ns since the epoch → DataFrame with UTC datetimes, oldest first."""
    if not rows:
        return pd.DataFrame()
    data = pd.DataFrame(rows)
    data["time"] = pd.to_datetime(data["time"], unit="ns", utc=True)
    return data.sort_values("time", kind="stable").reset_index(drop=True)
