"""The metric spool on disk: what was not advanced past comes back in order after a restart (no store, no broker)."""

from __future__ import annotations

from metrics import schema
from metrics.spool import MetricSpool


def points(count: int, start: int = 0):
    return [schema.heartbeat_point(f"pi-{i % 3}", "edge", 1.0, 2.0, 0.5, i, timestamp_ns=1_000 + start + i)
            for i in range(count)]


def test_points_not_advanced_past_come_back_in_order_after_a_restart(tmp_path):
    spool = MetricSpool(tmp_path)
    assert spool.recover() == []
    written = points(10)
    spool.append(written[:4])
    spool.append(written[4:])
    spool.advance(3)
    spool.close()  # no flush of anything else: as if the process had been killed here
    again = MetricSpool(tmp_path)
    assert again.recover() == written[3:]
    assert again.pending() == 7


def test_a_torn_last_record_is_cut_and_the_rest_recovered(tmp_path):
    spool = MetricSpool(tmp_path)
    spool.recover()
    spool.append(points(5))
    spool.close()
    with spool.path.open("ab") as handle:
        handle.write(b"\x40\x00\x00\x00partial")  # a length promising 64 bytes, then the kill
    again = MetricSpool(tmp_path)
    assert len(again.recover()) == 5
    again.append(points(1, start=100))
    again.close()
    assert len(MetricSpool(tmp_path).recover()) == 6  # appends after the cut are readable


def test_compaction_keeps_only_the_live_tail(tmp_path):
    spool = MetricSpool(tmp_path, compact_bytes=2_000)
    spool.recover()
    written = points(200)
    spool.append(written)
    first_file = spool.path
    spool.advance(150)
    assert not first_file.exists() and spool.offset == 0
    spool.append(points(1, start=500))
    spool.close()
    assert MetricSpool(tmp_path).recover() == [*written[150:], *points(1, start=500)]
