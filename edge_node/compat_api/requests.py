"""What both familiar APIs ask of the edge, as plain data: one generation request, its errors, its options.

Pure: no torch, no HTTP. `ollama_shapes` and `openai_shapes` turn their JSON bodies into a
`GenerationRequest`; the engine runs it; the shapes turn the outcome back into their JSON.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
DoneReason = Literal["stop", "length"]


class ApiRequestError(ValueError):
    """A request the edge refuses; `status` is the HTTP status, `param` the offending field (if one is)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """How each next token is picked. The edge decodes greedily unless a request asks for a temperature."""

    temperature: float = 0.0  # 0 = greedy (collaborative modes are always greedy)
    top_p: float = 1.0  # nucleus when sampling
    seed: int | None = None  # sampling seed; None = a fresh one per request


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One answer to generate: either a chat (`messages`) or a raw prompt text, never both."""

    model_id: str
    messages: tuple[Message, ...] = ()
    raw_prompt: str | None = None  # tokenized as is (Ollama's `raw`), no chat template
    context: tuple[int, ...] = ()  # token ids of an earlier exchange to continue (Ollama's `context`)
    max_new_tokens: int = 256
    sampling: Sampling = Sampling()
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings
    mode: str = ""  # collaboration mode; "" = the edge's setting
    keep_alive_s: float | None = None  # None = the edge's keep-alive; 0 = unload after; < 0 = forever

    def __post_init__(self) -> None:
        assert bool(self.messages) != (self.raw_prompt is not None), "a request has messages or a raw prompt"


def model_name(value: object, param: str = "model") -> str:
    """A model id from a client's name: `smollm2-135m` and `smollm2-135m:latest` name the same model."""
    if not isinstance(value, str) or not value.strip():
        raise ApiRequestError(f"{param} is required and must be a non-empty string", param=param)
    name = value.strip()
    name = name[: -len(":latest")] if name.endswith(":latest") else name
    if not _MODEL_ID.fullmatch(name):
        raise ApiRequestError(f"{param} {value!r} is not a model name (letters, digits, '.', '_', '-')", status=404,
                              param=param, code="model_not_found")
    return name


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body. Raises ApiRequestError."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiRequestError(f"body is not valid JSON: {error}") from None
    except RecursionError:
        raise ApiRequestError("body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiRequestError(f"body must be a JSON object, got {type(data).__name__}")
    return data


def parse_messages(value: object, param: str = "messages") -> tuple[Message, ...]:
    """Chat turns `[{"role", "content"}]`; OpenAI's list-of-parts content is joined when every part is text."""
    if not isinstance(value, list) or not value:
        raise ApiRequestError(f"{param} must be a non-empty list of {{role, content}} objects", param=param)
    messages = []
    for index, item in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(item, dict):
            raise ApiRequestError(f"{where} must be an object", param=where)
        role = item.get("role")
        if role == "developer":  # OpenAI's newer name for the system turn
            role = "system"
        if role not in ROLES:
            raise ApiRequestError(f"{where}.role must be one of {list(ROLES)}, got {role!r}", param=f"{where}.role")
        if item.get("images"):
            raise ApiRequestError(f"{where}.images: this edge's models read text only", param=f"{where}.images")
        messages.append(Message(role, _content(item.get("content"), f"{where}.content")))
    if messages[-1].role == "assistant":
        raise ApiRequestError(f"the last of {param} must be a user or system turn, not the assistant's", param=param)
    return tuple(messages)


def _content(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiRequestError(f"{where}: only text parts are supported", param=where)
            parts.append(part["text"])
        return "".join(parts)
    raise ApiRequestError(f"{where} must be a string", param=where)


def number(data: dict[str, Any], key: str, low: float, high: float, param: str | None = None) -> float | None:
    """An optional finite number in [low, high] (None if absent or null). Raises ApiRequestError."""
    value = data.get(key)
    if value is None:
        return None
    name = param or key
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiRequestError(f"{name} must be a number", param=name)
    if not low <= value <= high:
        raise ApiRequestError(f"{name} must be between {low:g} and {high:g}, got {value:g}", param=name)
    return float(value)


def integer(data: dict[str, Any], key: str, low: int, high: int, param: str | None = None) -> int | None:
    """An optional integer in [low, high]. Raises ApiRequestError."""
    value = data.get(key)
    if value is None:
        return None
    name = param or key
    if isinstance(value, bool) or not (isinstance(value, int) or isinstance(value, float) and value.is_integer()):
        raise ApiRequestError(f"{name} must be an integer", param=name)
    if not low <= value <= high:
        raise ApiRequestError(f"{name} must be between {low} and {high}, got {value}", param=name)
    return int(value)


def stop_strings(value: object, param: str = "stop") -> tuple[str, ...]:
    """A stop string or a list of up to 16 of them (empty strings dropped). Raises ApiRequestError."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > 16 or not all(isinstance(item, str) for item in items):
        raise ApiRequestError(f"{param} must be a string or a list of at most 16 strings", param=param)
    return tuple(item for item in items if item)


def mode_option(value: object, modes: tuple[str, ...], param: str = "mode") -> str:
    """A collaboration mode the edge offers ("" when absent: the edge's setting). Raises ApiRequestError."""
    if value is None or value == "":
        return ""
    if value not in modes:
        raise ApiRequestError(f"{param} must be one of {list(modes)}, got {value!r}", param=param)
    return str(value)


_MODEL_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: object, param: str = "keep_alive") -> float | None:
    """Ollama's keep_alive: seconds as a number, or a Go duration ("5m", "1h30m", "-1s"); a bare number string
    is seconds. None when absent. 0 = unload after the request, negative = keep loaded. Raises ApiRequestError."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        parts = _DURATION_PART.findall(body)
        if parts and "".join(number + unit for number, unit in parts) == body:
            return sign * sum(float(number) * _UNIT_S[unit] for number, unit in parts)
    raise ApiRequestError(f"{param} must be seconds or a duration such as \"5m\" or \"-1\", got {value!r}",
                          param=param)


@dataclass(frozen=True, slots=True)
class GenerationOutcome:
    """One finished answer and its timings (seconds, from the request reaching the engine)."""

    model_id: str
    mode: str  # the mode that ran (an edge variant always answers standalone)
    text: str
    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    done_reason: DoneReason
    load_s: float  # waiting for the model cache (0 when resident)
    prompt_eval_s: float  # prompt pass up to the first token
    eval_s: float  # first token to last token
    total_s: float
    fallback: bool = False  # the cloud fell silent and the edge finished the answer

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first per second of generation after the first: the node's own decode rate."""
        return (len(self.token_ids) - 1) / self.eval_s if len(self.token_ids) > 1 and self.eval_s > 0 else 0.0
