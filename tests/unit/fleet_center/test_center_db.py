"""The center's SQLite state: resume point and results recorded once."""

from fleet_center.center_db import CenterDb


def test_next_round_resumes_an_unfinished_round_then_continues(tmp_path):
    db = CenterDb(tmp_path / "c.sqlite")
    assert db.next_round() == 0
    db.start_round(0, "offloading")
    db.finish_round(0, {"ok": 1})
    db.start_round(1, "offloading")
    assert db.next_round() == 1  # started, not finished
    db.finish_round(1, {})
    reopened = CenterDb(tmp_path / "c.sqlite")
    assert reopened.next_round() == 2
    assert reopened.round_summary(0) == {"ok": 1}


def test_a_task_result_is_recorded_once(tmp_path):
    db = CenterDb(tmp_path / "c.sqlite")
    db.add_tasks(0, [("r0-pi-01-0", 7, 2, "pi-01")])
    db.assign("r0-pi-01-0", "pi-01", "m")
    assert db.record_result("r0-pi-01-0", "pi-01", "m", "ok", "Paris", 1.0, 0.5, 3)
    assert not db.record_result("r0-pi-01-0", "pi-02", "m", "ok", "Lyon", 0.0, 0.5, 3)
    rows = db.results_of(0)
    assert len(rows) == 1 and rows[0][6] == "Paris"
    assert db.tasks_of(0)[0].status == "done"


def test_latest_placement_skips_failed_deployments(tmp_path):
    db = CenterDb(tmp_path / "c.sqlite")
    db.record_placement(20, "pi-01", "a", "deployed")
    db.record_placement(20, "pi-01", "b", "failed")
    db.record_placement(20, "pi-02", "a", "kept")
    assert db.latest_placement() == {"pi-01": {"a"}, "pi-02": {"a"}}
