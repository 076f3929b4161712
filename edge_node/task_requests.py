"""Turning an HTTP request body into a task: the original Pi scheduler's shape or a full task object."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

from broker.messages import TaskSpec
from broker.messages.codec import MessageError
from edge_node.collab.config import MODES

DEFAULT_MAX_NEW_TOKENS = 64


class RequestError(ValueError):
    """The request body is not a valid task; the message says what is wrong (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class TaskRequest:
    task: TaskSpec
    wait: bool  # answer with the result (True) or with a task id to poll (False)
    wait_timeout_s: float


def parse_task_request(body: bytes, now: float) -> TaskRequest:
    """Parse `{"task_type", "model_name", "prompt"}` or a full task object. Raises RequestError."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(f"body is not valid JSON: {error}") from None
    except RecursionError:  # e.g. 100,000 nested arrays: the parser gives up before the body is a task
        raise RequestError("body is nested too deeply to be a task") from None
    if not isinstance(data, dict):
        raise RequestError(f"body must be a JSON object, got {type(data).__name__}")
    try:  # JSON may escape lone surrogates ("\ud800"): no tokenizer or topic takes such a string
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise RequestError("body holds a string that is not valid Unicode (a lone surrogate)") from None
    known = {"task_id", "task_type", "model_name", "model_id", "prompt", "task_token", "priority", "timeout_s",
             "max_new_tokens", "keep_alive_s", "keep_alive", "wait", "wait_timeout_s", "mode", "route", "mining_mode",
             "cloud_model_id"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RequestError(f"unknown fields {unknown}; known: {sorted(known)}")
    task_type = _field(data, "task_type", (str, int))
    if isinstance(task_type, int) and not 0 <= task_type <= 4:
        raise RequestError(f"task_type number must be 0-4, got {task_type}")
    model_id = data.get("model_name", data.get("model_id"))
    prompt = data.get("prompt", data.get("task_token"))
    if not isinstance(model_id, str) or not model_id:
        raise RequestError("model_name (or model_id) is required and must be a non-empty string")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError("prompt (or task_token) is required and must be a non-empty string")
    timeout_s = _number(data, "timeout_s", None)
    keep_alive = data.get("keep_alive_s", data.get("keep_alive"))
    if keep_alive is not None and (isinstance(keep_alive, bool) or not isinstance(keep_alive, int | float)
                                   or not math.isfinite(keep_alive)):  # 1e999 parses as inf
        raise RequestError("keep_alive_s must be a number of seconds (0 = unload now, negative = forever)")
    mode = data.get("mode", "standalone")
    if mode not in MODES:
        raise RequestError(f"mode must be one of {list(MODES)}")
    try:
        task = TaskSpec(
            task_id=str(data.get("task_id") or f"http-{uuid.uuid4().hex[:12]}"),
            task_type=str(task_type),
            prompt=prompt,
            model_id=model_id,
            priority=int(_number(data, "priority", 0)),
            deadline=now + timeout_s if timeout_s else 0.0,
            max_new_tokens=int(_number(data, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
            keep_alive_s=float(keep_alive) if keep_alive is not None else None,
            mode=mode,
            route=_text(data, "route", ""),
            mining_mode=_text(data, "mining_mode", "mining_then_inference"),
            cloud_model_id=_text(data, "cloud_model_id", ""),
        )
    except (ValueError, MessageError) as error:
        raise RequestError(str(error)) from None
    wait = data.get("wait", False)
    if not isinstance(wait, bool):
        raise RequestError("wait must be true or false")
    return TaskRequest(task, wait, _number(data, "wait_timeout_s", 300.0))


def _text(data: dict[str, Any], name: str, default: str) -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string")
    return value


def _field(data: dict[str, Any], name: str, types: tuple[type, ...]) -> Any:
    value = data.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, types) or value == "":
        raise RequestError(f"{name} is required (one of TC, NER, QA, TS, SG, 0-4, or any name for a plain chat turn)")
    return value


def _number(data: dict[str, Any], name: str, default: float | None) -> Any:
    value = data.get(name)
    if value is None:  # absent or null: the default
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number")
    if value < 0 and name != "priority":
        raise RequestError(f"{name} must be >= 0")
    return value
