"""The influxdb-client (InfluxDB 2.x) write path against a real server that speaks /api/v2/write: VictoriaMetrics.

VictoriaMetrics stores each numeric field as a series named <measurement>_<field> with the tags as
labels (strings are not kept), at millisecond precision; the points are read back through its own
export API. Flux queries need a real InfluxDB 2.x, which Debian does not ship.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from fleet_center.recorder import MetricRecorder
from metrics import schema
from metrics.config import RecorderConfig, StoreConfig
from metrics.errors import StoreUnavailableError
from metrics.influx2 import Influx2Store
from metrics.launcher import LocalVictoriaMetrics, free_port
from tests.conftest import wait_until


def exported(server: LocalVictoriaMetrics, series_regex: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]:
    """Series matching the regex: (name, sorted labels) → values."""
    # Freshly written rows sit in memory buffers for seconds before searches see them.
    httpx.get(f"{server.url}/internal/force_flush", timeout=5.0).raise_for_status()
    answer = httpx.get(f"{server.url}/api/v1/export", params={"match[]": f'{{__name__=~"{series_regex}"}}'}, timeout=5.0)
    answer.raise_for_status()
    series = {}
    for line in answer.text.splitlines():
        item = json.loads(line)
        labels = dict(item["metric"])
        name = labels.pop("__name__")
        series[(name, tuple(sorted(labels.items())))] = item["values"]
    return series


def influx2_config(server: LocalVictoriaMetrics, **changes: object) -> StoreConfig:
    return StoreConfig(backend="influx2", url=server.url, org="edgefleet", bucket="edgefleet", token="test-token",
                       timeout_s=2.0, **changes)  # type: ignore[arg-type]


def test_influx2_store_writes_points_that_read_back(victoria_metrics: LocalVictoriaMetrics) -> None:
    store = Influx2Store(influx2_config(victoria_metrics))
    now = time.time_ns()
    store.write([
        schema.token_point("pi-01", "s-1", "edge", position=0, exit_layer=15, latency_ms=31.5, bytes_up=1152, timestamp_ns=now),
        schema.token_point("pi-01", "s-1", "cloud", position=1, exit_layer=30, latency_ms=120.25, bytes_up=1152,
                           bytes_down=24, timestamp_ns=now + 5_000_000),
    ])
    store.close()
    assert wait_until(lambda: len(exported(victoria_metrics, "token_.*")) >= 10, timeout_s=10, interval_s=0.2)
    series = exported(victoria_metrics, "token_.*")
    edge = (("node", "pi-01"), ("session", "s-1"), ("source", "edge"))
    cloud = (("node", "pi-01"), ("session", "s-1"), ("source", "cloud"))
    assert series[("token_latency_ms", edge)] == [31.5]
    assert series[("token_latency_ms", cloud)] == [120.25]
    assert series[("token_exit_layer", cloud)] == [30]
    assert series[("token_bytes_down", cloud)] == [24]


def test_recorder_writes_through_influxdb_client(victoria_metrics: LocalVictoriaMetrics) -> None:
    config = RecorderConfig(store=influx2_config(victoria_metrics), flush_interval_s=0.05, batch_points=50)
    now = time.time_ns()
    points = [
        schema.heartbeat_point("pi-07", "edge", cpu_percent=float(i), memory_percent=40.0, load_1m=0.1, queue_depth=i,
                               timestamp_ns=now - (200 - i) * 1_000_000)
        for i in range(200)
    ]
    with MetricRecorder(config) as recorder:
        recorder.record(points)
        assert wait_until(lambda: recorder.stats().written == 200)
    key = ("heartbeat_cpu_percent", (("node", "pi-07"), ("role", "edge")))

    def cpu_values() -> list[float]:
        return sorted(exported(victoria_metrics, "heartbeat_cpu_percent").get(key, []))

    assert wait_until(lambda: len(cpu_values()) == 200, timeout_s=10, interval_s=0.2)
    assert cpu_values() == [float(i) for i in range(200)]


def test_influx2_store_down_raises_unavailable() -> None:
    store = Influx2Store(StoreConfig(backend="influx2", url=f"http://127.0.0.1:{free_port()}", timeout_s=0.5))
    with pytest.raises(StoreUnavailableError):
        store.write([schema.model_profile_point("m", model_bytes=1, timestamp_ns=time.time_ns())])
