"""The routing training table's glue: fitting inference-then-mining's rule from the rows that carry signals."""

from __future__ import annotations

from benchmarks import router_data
from routing.escalation import EscalationRule


def row(task_id: int, parse_ok: bool, edge: float, cloud: float, signals: bool = True) -> dict:
    base = {"task_id": task_id, "edge_score": edge, "cloud_score": cloud}
    if signals:
        base["edge_signals"] = {"mean_confidence": 0.6, "repetition": 0.0, "parse_ok": parse_ok}
    return base


def test_the_escalation_rule_is_fitted_on_rows_with_signals_and_written_where_edges_read_it(tmp_path, monkeypatch):
    monkeypatch.setattr(router_data, "DATA_DIR", tmp_path)
    rows = [row(1, False, 0.0, 1.0), row(2, True, 1.0, 1.0), row(3, True, 1.0, 1.0), row(4, True, 1.0, 1.0),
            row(5, False, 0.0, 1.0, signals=False)]  # collected before signals were recorded: left out
    result = router_data.train_escalation("edge-m", rows)
    assert result["fitted"] and result["answers"] == 4 and result["escalated_share"] == 0.25
    rule = EscalationRule.load(tmp_path / "escalation-edge-m.json")
    assert rule.escalate_parse_failures and result["rule"]["escalate_parse_failures"]


def test_without_signals_nothing_is_fitted_or_written(tmp_path, monkeypatch):
    monkeypatch.setattr(router_data, "DATA_DIR", tmp_path)
    result = router_data.train_escalation("edge-m", [row(1, True, 1.0, 1.0, signals=False)])
    assert not result["fitted"] and "signals" in result["why"]
    assert not (tmp_path / "escalation-edge-m.json").exists()
