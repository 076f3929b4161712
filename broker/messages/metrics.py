"""Metric points nodes publish on `metrics/{node}` for the center's recorder."""

from __future__ import annotations

from dataclasses import dataclass

from broker.messages.codec import Message, require
from broker.messages.membership import valid_node_id


@dataclass(frozen=True, slots=True)
class MetricPoint(Message):
    """One time-series point, shaped like InfluxDB line protocol."""

    TAG = "metric_point"
    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | str | bool]
    timestamp_ns: int

    def __post_init__(self) -> None:
        require(0 < len(self.measurement) <= 64, "measurement must be 1-64 chars")
        require(len(self.fields) > 0, "a point needs at least one field")
        require(self.timestamp_ns > 0, "timestamp_ns must be > 0")


@dataclass(frozen=True, slots=True)
class MetricBatch(Message):
    """A batch of points from one node."""

    TAG = "metric_batch"
    MAX_BYTES = 2 * 1024 * 1024
    node_id: str
    points: tuple[MetricPoint, ...]

    def __post_init__(self) -> None:
        require(valid_node_id(self.node_id), f"invalid node id {self.node_id!r}")
        require(len(self.points) <= 20_000, "at most 20,000 points per batch")
