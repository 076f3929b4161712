"""The pipeline tracker: speeds per token and per-node summaries."""

from __future__ import annotations

import pytest

from broker.messages.pipeline import StageTiming
from pipeline.tracker import PipelineTracker


def timing(node: str, position: int, count: int = 1, layers: int = 10, compute_s: float = 0.01, send_s: float = 0.001,
           receive_s: float = 0.002) -> StageTiming:
    return StageTiming("r", 1, node, position, count, layers, compute_s, 0.0, send_s, receive_s, 0.0005)


def test_speed_is_layers_per_second_of_compute() -> None:
    tracker = PipelineTracker()
    tracker.add(timing("a", 40, layers=10, compute_s=0.02))
    assert tracker.speeds_at(40) == {"a": pytest.approx(500.0)}


def test_prompt_pass_gives_no_speed() -> None:
    tracker = PipelineTracker()
    tracker.add(timing("a", 0, count=40))
    assert tracker.speeds_at(0) == {}


def test_summary_splits_compute_from_communication() -> None:
    tracker = PipelineTracker()
    tracker.add(timing("a", 0, count=40))
    tracker.add(timing("a", 40, compute_s=0.01, send_s=0.001, receive_s=0.003))
    tracker.add(timing("a", 41, compute_s=0.03, send_s=0.001, receive_s=0.001))
    row = tracker.summary()["a"]
    assert row["tokens"] == 2
    assert row["compute_ms"] == pytest.approx(20.0) and row["communication_ms"] == pytest.approx(3.0)
