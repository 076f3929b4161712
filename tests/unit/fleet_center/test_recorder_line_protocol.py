"""Line protocol encoding: escaping and field types."""

from __future__ import annotations

from broker.messages.metrics import MetricPoint
from metrics.line_protocol import encode, encode_point

T0 = 1_700_000_000_000_000_000


def test_types_get_their_literals_and_tags_are_sorted() -> None:
    point = MetricPoint("task", {"status": "ok", "node": "pi-01"}, {"n": 3, "ok": True, "x": 0.5, "s": "hi"}, T0)
    assert encode_point(point) == f'task,node=pi-01,status=ok n=3i,ok=true,x=0.5,s="hi" {T0}'


def test_commas_spaces_and_equals_are_escaped_where_they_would_split_the_line() -> None:
    point = MetricPoint("my metric,x", {"a b": "c,d=e"}, {"f g": 'say "hi" \\'}, T0)
    assert encode_point(point) == f'my\\ metric\\,x,a\\ b=c\\,d\\=e f\\ g="say \\"hi\\" \\\\" {T0}'


def test_newlines_cannot_start_a_new_point() -> None:
    line = encode_point(MetricPoint("m", {"t": "a\nb"}, {"s": "x\ny"}, T0))
    assert line is not None and "\n" not in line


def test_empty_tag_values_are_left_out() -> None:
    assert encode_point(MetricPoint("m", {"node": ""}, {"v": 1}, T0)) == f"m v=1i {T0}"


def test_nan_and_infinite_fields_are_dropped_and_a_point_without_fields_is_skipped() -> None:
    assert encode_point(MetricPoint("m", {}, {"a": float("nan"), "b": 2.0}, T0)) == f"m b=2.0 {T0}"
    assert encode([MetricPoint("m", {}, {"a": float("inf")}, T0), MetricPoint("m", {}, {"v": 1}, T0 + 1)]) == f"m v=1i {T0 + 1}"
