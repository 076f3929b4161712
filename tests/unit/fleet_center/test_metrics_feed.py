"""What the center's metrics feed writes for a finished round (the recorder replaced by a list of points)."""

from __future__ import annotations

from fleet_center.center_db import CenterDb
from fleet_center.metrics_feed import MetricsFeed
from metrics import schema


class PointList:
    """Stands in for MetricRecorder: keeps the points instead of sending them to InfluxDB."""

    def __init__(self) -> None:
        self.points: list = []

    def record(self, points) -> None:
        self.points.extend(points)


def test_a_caching_round_is_recorded_as_a_round_as_well_as_its_placements(tmp_path):
    recorded = PointList()
    feed = MetricsFeed(recorded, CenterDb(tmp_path / "center.sqlite"), role_of=lambda node: "edge")  # type: ignore[arg-type]
    feed.round_done(20, {"kind": "caching", "placement": {"pi-01": ["a", "b"]}, "previous": {"pi-01": ["a"]},
                         "failed": [], "duration_s": 4.5})
    caching = [p for p in recorded.points if p.measurement == schema.CACHING]
    assert {(p.tags["model"], p.fields["status"]) for p in caching} == {("a", "kept"), ("b", "ready")}
    rounds = [p for p in recorded.points if p.measurement == schema.ROUND]
    assert len(rounds) == 1
    fields = rounds[0].fields
    assert rounds[0].tags["task_type"] == schema.ALL_TASK_TYPES
    assert (fields["round_id"], fields["caching_round"], fields["tasks"], fields["duration_s"]) == (20, True, 0, 4.5)
