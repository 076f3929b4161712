"""Parsing a pipeline API body into a request (no bus, no model)."""

from __future__ import annotations

import pytest

from fleet_center.pipeline_api import BadPipelineRequest, parse_body


def encode(model_id: str, text: str) -> list[int]:
    return [ord(character) for character in text]


def test_auto_allocation_and_defaults() -> None:
    request = parse_body({"model_id": "m", "nodes": ["a", "b"], "prompt": "hi"}, encode)
    assert request.allocation is None and request.prompt_ids == (104, 105)
    assert (request.reallocation.threshold, request.reallocation.min_tokens, request.reallocation.performance_weight) == (
        0.15, 8, 0.3)


def test_allocation_list_and_reallocation_parameters() -> None:
    request = parse_body({"model_id": "m", "nodes": ["a", "b"], "prompt_ids": [1, 2], "allocation": [20, 10],
                          "reallocation": {"enabled": False, "threshold": 0.2, "min_tokens": 4, "performance_weight": 0.5}},
                         encode)
    assert request.allocation == (20, 10) and not request.reallocation.enabled
    assert request.reallocation.min_tokens == 4


@pytest.mark.parametrize("body, problem", [
    ({"nodes": ["a"], "prompt": "x"}, "model_id"),
    ({"model_id": "m", "nodes": [], "prompt": "x"}, "nodes"),
    ({"model_id": "m", "nodes": ["a"], "prompt": "x", "allocation": "even"}, "allocation"),
    ({"model_id": "m", "nodes": ["a"], "prompt": "x", "kv_mode": "telepathy"}, "kv_mode"),
    ({"model_id": "m", "nodes": ["a"], "prompt": "x", "reallocation": {"threshold": 2}}, "threshold"),
    ({"model_id": "m", "nodes": ["a"], "prompt": "x", "max_new_tokens": "many"}, "max_new_tokens"),
])
def test_bad_bodies_name_the_problem(body: dict, problem: str) -> None:
    with pytest.raises(BadPipelineRequest, match=problem):
        parse_body(body, encode)
