"""POST /perform_task bodies with query routing fields."""

import json

import pytest

from edge_node.task_requests import RequestError, parse_task_request


def _body(**fields) -> bytes:
    return json.dumps({"task_type": "QA", "model_name": "m", "prompt": "Where?", **fields}).encode()


def test_route_auto_is_accepted():
    task = parse_task_request(_body(route="auto"), now=0.0).task
    assert task.route == "auto" and task.mining_mode == "mining_then_inference"


def test_inference_then_mining_is_accepted():
    task = parse_task_request(_body(route="auto", mining_mode="inference_then_mining"), now=0.0).task
    assert task.mining_mode == "inference_then_mining"


def test_a_task_without_route_is_not_routed():
    assert parse_task_request(_body(), now=0.0).task.route == ""


def test_an_unknown_route_is_refused_with_the_known_ones():
    with pytest.raises(RequestError, match="auto"):
        parse_task_request(_body(route="moon"), now=0.0)


def test_an_unknown_mining_mode_is_refused():
    with pytest.raises(RequestError, match="mining_mode"):
        parse_task_request(_body(route="auto", mining_mode="guess"), now=0.0)


def test_a_route_that_is_not_text_is_refused():
    with pytest.raises(RequestError, match="route must be a string"):
        parse_task_request(_body(route=1), now=0.0)
