"""HTTP task bodies: the original shape, full task objects, and clear errors."""

import pytest

from edge_node.task_requests import RequestError, parse_task_request


def test_original_pi_scheduler_shape_is_accepted():
    request = parse_task_request(b'{"task_type": "arithmetic", "model_name": "m", "prompt": "2+2?"}', now=100.0)
    assert request.task.task_type == "arithmetic"
    assert request.task.model_id == "m"
    assert request.task.deadline == 0.0
    assert not request.wait


def test_full_task_object_with_deadline_and_keep_alive():
    body = (b'{"task_id": "t-1", "task_type": 2, "model_id": "m", "task_token": "Q?", "priority": 5, '
            b'"timeout_s": 30, "keep_alive_s": 0, "wait": true}')
    request = parse_task_request(body, now=100.0)
    assert request.task.task_id == "t-1"
    assert request.task.task_type == "2"
    assert request.task.deadline == 130.0
    assert request.task.keep_alive_s == 0.0
    assert request.task.priority == 5
    assert request.wait


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b'"x"', "JSON object"),
        (b'{"task_type": true, "model_name": "m", "prompt": "x"}', "task_type"),
        (b'{"task_type": "TC", "model_name": "", "prompt": "x"}', "model_name"),
        (b'{"task_type": "TC", "model_name": "m", "prompt": "   "}', "prompt"),
        (b'{"task_type": "TC", "model_name": "m", "prompt": "x", "timeout_s": -1}', "timeout_s"),
        (b'{"task_type": "TC", "model_name": "m", "prompt": "x", "keep_alive_s": "5m"}', "keep_alive_s"),
        (b'{"task_type": "TC", "model_name": "m", "prompt": "x", "wait": "yes"}', "wait"),
        (b'{"task_type": "TC", "model_name": "m", "prompt": "x", "max_new_tokens": 0}', "max_new_tokens"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"task_type": "TC", "model_name": "m", "prompt": "\\ud800"}', "not valid Unicode"),
        (b'{"task_type": "TC", "model_name": "m", "prompt": "x", "mode": null}', "mode"),
        (b'{"task_type": "TC", "model_name": "m", "prompt": "x", "mode": "telepathy"}', "mode"),
        (b'{"task_type": "TC", "model_name": "m", "prompt": "x", "keep_alive_s": 1e999}', "keep_alive_s"),
        (b'{"task_type": 18446744073709551616, "model_name": "m", "prompt": "x"}', "task_type"),
    ],
)
def test_bad_bodies_name_the_problem(body, fragment):
    with pytest.raises(RequestError, match=fragment):
        parse_task_request(body, now=0.0)


def test_null_numbers_take_their_defaults():
    body = b'{"task_type": "QA", "model_name": "m", "prompt": "x", "priority": null, "max_new_tokens": null}'
    request = parse_task_request(body, now=0.0)
    assert request.task.priority == 0 and request.task.max_new_tokens == 64
