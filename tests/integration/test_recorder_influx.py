"""The recorder and the InfluxDB 1.x store against a real influxd started by the test."""

from __future__ import annotations

import socket
import time

import pytest

from broker.client import BusClient
from broker.messages.metrics import MetricBatch, MetricPoint
from broker.topics import METRICS
from fleet_center.recorder import MetricRecorder
from metrics import schema
from metrics.config import RecorderConfig, StoreConfig
from metrics.errors import StoreUnavailableError
from metrics.influx1 import Influx1Store
from metrics.launcher import LocalInfluxDB, free_port
from tests.conftest import RunningBroker, wait_until
from tests.integration.metrics_servers import RunningInflux

HOUR_NS = 3600 * 1_000_000_000


def fast_recorder_config(store: StoreConfig, **changes: object) -> RecorderConfig:
    values: dict[str, object] = dict(flush_interval_s=0.05, retry_min_s=0.05, retry_max_s=0.2, stop_flush_s=2.0)
    values.update(changes)
    return RecorderConfig(store=store, **values)  # type: ignore[arg-type]


def heartbeats(count: int, node: str = "pi-01", start_ns: int | None = None) -> list[MetricPoint]:
    start_ns = start_ns or time.time_ns() - count * 1000
    return [
        schema.heartbeat_point(node, "edge", cpu_percent=float(i % 100), memory_percent=50.0, load_1m=0.5,
                               queue_depth=i % 7, loaded_models=["smollm2-135m-int8"], timestamp_ns=start_ns + i)
        for i in range(count)
    ]


def count_rows(store: Influx1Store | object, measurement: str = schema.HEARTBEAT) -> int:
    now = time.time_ns()
    return len(store.query(measurement, now - HOUR_NS, now + HOUR_NS))  # type: ignore[attr-defined]


def test_points_are_read_back_with_their_tags_and_typed_fields(influxd: RunningInflux) -> None:
    store = influxd.store()
    now = time.time_ns()
    store.write([
        schema.task_point("pi-01", "smollm2-135m-int8", "QA", "ok", round_id=3, task_id="t,1 =x\"y\\",
                          latency_ms=250.0, tokens=10, quality=0.75, timestamp_ns=now),
        schema.token_point("pi 02,x=y", "s 1", "cloud", position=4, exit_layer=30, latency_ms=99.5,
                           bytes_up=1152, bytes_down=24, timestamp_ns=now + 1),
    ])
    tasks = store.query(schema.TASK, now - HOUR_NS, now + HOUR_NS)
    assert tasks.loc[0, "task_id"] == 't,1 =x"y\\'
    assert tasks.loc[0, "tokens_per_s"] == pytest.approx(40.0)
    assert (tasks.loc[0, "node"], tasks.loc[0, "task_type"], int(tasks.loc[0, "round_id"])) == ("pi-01", "QA", 3)
    tokens = store.query(schema.TOKEN, now - HOUR_NS, now + HOUR_NS, tags={"session": "s 1"})
    assert list(tokens["node"]) == ["pi 02,x=y"]
    assert int(tokens.loc[0, "bytes_up"]) == 1152 and tokens.loc[0, "time"].value == now + 1


def test_query_of_a_missing_database_is_empty(influxd: RunningInflux) -> None:
    assert influxd.store("never_written").query(schema.ROUND, 0, time.time_ns()).empty


def test_recorder_writes_recorded_points_in_batches(influxd: RunningInflux) -> None:
    config = fast_recorder_config(influxd.store_config(), batch_points=100)
    with MetricRecorder(config) as recorder:
        recorder.record(heartbeats(450))
        assert wait_until(lambda: recorder.stats().written == 450, timeout_s=10)
    assert count_rows(Influx1Store(config.store)) == 450
    stats = recorder.stats()
    assert (stats.dropped, stats.buffered, stats.write_errors) == (0, 0, 0)


def test_store_down_then_up_buffered_points_arrive_and_callers_never_block(own_influxd: LocalInfluxDB) -> None:
    store_config = StoreConfig(url=own_influxd.url, db="fleet", timeout_s=1.0)
    recorder = MetricRecorder(fast_recorder_config(store_config)).start()
    try:
        recorder.record(heartbeats(10, start_ns=time.time_ns() - 10_000))
        assert wait_until(lambda: recorder.stats().written == 10)
        own_influxd.kill()
        slowest_s = 0.0
        for chunk in range(20):
            started = time.monotonic()
            recorder.record(heartbeats(50, node="pi-02", start_ns=time.time_ns() + chunk * 100))
            slowest_s = max(slowest_s, time.monotonic() - started)
            time.sleep(0.02)
        assert slowest_s < 0.5, f"record() blocked for {slowest_s:.3f} s while the store was down"  # loaded host: slack
        assert wait_until(lambda: recorder.stats().write_errors > 0)
        assert recorder.stats().buffered == 1000 and not recorder.stats().store_ok
        own_influxd.start()
        assert wait_until(lambda: recorder.stats().buffered == 0, timeout_s=15)
        assert recorder.stats().store_ok and recorder.stats().dropped == 0
    finally:
        recorder.stop()
    assert count_rows(Influx1Store(store_config)) == 1010


def test_full_buffer_drops_the_oldest_points_and_counts_them() -> None:
    closed_port = free_port()  # nothing listens: every write fails at once
    config = fast_recorder_config(
        StoreConfig(url=f"http://127.0.0.1:{closed_port}", timeout_s=0.5), batch_points=10, buffer_points=100, stop_flush_s=0.2,
    )
    recorder = MetricRecorder(config).start()
    recorder.record(heartbeats(250))
    stats = recorder.stop()
    assert (stats.buffered, stats.dropped, stats.written) == (100, 150, 0)
    assert "127.0.0.1" in stats.last_error


def test_a_store_that_never_answers_costs_callers_nothing() -> None:
    # A listening socket nobody reads from: connections complete, requests hang until the HTTP timeout.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        url = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
        config = fast_recorder_config(StoreConfig(url=url, timeout_s=2.0), stop_flush_s=0.5)
        recorder = MetricRecorder(config).start()
        slowest_s = 0.0
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            started = time.monotonic()
            recorder.record(heartbeats(20))
            slowest_s = max(slowest_s, time.monotonic() - started)
            time.sleep(0.01)
        stats = recorder.stop()
    # Waiting on the store would take its whole 2 s timeout; a busy machine may delay a call a little (0.53 s seen
    # once in a full suite run), so the bound is half the timeout.
    assert slowest_s < 1.0, f"record() blocked for {slowest_s:.3f} s on a store that hangs for 2 s"
    assert stats.write_errors >= 2 and stats.written == 0 and "Timeout" in stats.last_error


def test_stop_writes_what_is_still_buffered(influxd: RunningInflux) -> None:
    config = fast_recorder_config(influxd.store_config(), flush_interval_s=30.0)  # only stop() flushes
    recorder = MetricRecorder(config).start()
    recorder.record(heartbeats(25))
    stats = recorder.stop()
    assert (stats.written, stats.buffered) == (25, 0)
    assert count_rows(Influx1Store(config.store)) == 25


def test_store_outage_raises_unavailable(own_influxd: LocalInfluxDB) -> None:
    store = Influx1Store(StoreConfig(url=own_influxd.url, timeout_s=0.5))
    own_influxd.stop()
    with pytest.raises(StoreUnavailableError):
        store.write(heartbeats(1))


def test_batches_from_the_bus_are_recorded(mosquitto: RunningBroker, influxd: RunningInflux) -> None:
    config = fast_recorder_config(influxd.store_config())
    with MetricRecorder(config) as recorder, BusClient("center", mosquitto.bus_config("center")) as center:
        recorder.attach(center, wait_s=5.0)  # QoS 0: only what is published after the SUBACK arrives
        with BusClient("pi-01", mosquitto.bus_config("pi-01")) as edge:
            assert wait_until(lambda: edge.connected)
            edge.publish(METRICS, MetricBatch("pi-01", tuple(heartbeats(30))), node="pi-01")
            # A batch naming another node on pi-01's topic: recorded by nobody.
            edge.publish(METRICS, MetricBatch("pi-02", tuple(heartbeats(5, node="pi-02"))), node="pi-01")
            assert wait_until(lambda: recorder.stats().written == 30 and recorder.stats().foreign == 5)
    assert count_rows(Influx1Store(config.store)) == 30


def test_points_buffered_while_the_store_is_down_survive_a_restart_of_the_recorder(own_influxd: LocalInfluxDB,
                                                                                    tmp_path) -> None:
    store_config = StoreConfig(url=own_influxd.url, db="fleet", timeout_s=0.5)
    own_influxd.stop()
    first = MetricRecorder(fast_recorder_config(store_config, spool_dir=str(tmp_path / "spool"), stop_flush_s=0.0))
    first.start()
    first.record(heartbeats(300, start_ns=time.time_ns() - 10_000))
    assert wait_until(lambda: first.stats().write_errors > 0)
    first.stop()  # gives up at once: 300 points unwritten, as a crash would leave them
    own_influxd.start()
    with MetricRecorder(fast_recorder_config(store_config, spool_dir=str(tmp_path / "spool"))) as second:
        assert wait_until(lambda: second.stats().written == 300, timeout_s=15)
    assert count_rows(Influx1Store(store_config)) == 300
