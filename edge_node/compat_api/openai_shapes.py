"""OpenAI's chat completions on the edge as pure functions: bodies to `GenerationRequest`s, outcomes to its JSON.

Non-streaming answers are one `chat.completion` object; streaming answers are server-sent events of
`chat.completion.chunk` objects (the role first, then content deltas, then the finish reason, then
usage when `stream_options.include_usage`), ended by `data: [DONE]`. Errors are
`{"error": {"message", "type", "param", "code"}}` with the HTTP status the `openai` client turns into
its exception classes. Refused with a 400 rather than ignored: `n` > 1, tools and function calls,
JSON response formats, log-probabilities. The collaboration mode is the extra field `mode`
(`extra_body={"mode": ...}` in the client).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from edge_node.compat_api.requests import (
    ApiRequestError,
    GenerationOutcome,
    GenerationRequest,
    Sampling,
    integer,
    mode_option,
    model_name,
    number,
    parse_messages,
    stop_strings,
)

logger = logging.getLogger(__name__)

OWNER = "edgefleet"


@dataclass(frozen=True, slots=True)
class ChatCompletionRequest:
    generation: GenerationRequest
    stream: bool
    include_usage: bool  # streaming: a last chunk with the token counts


def parse_chat_completion(data: dict[str, Any], modes: tuple[str, ...]) -> ChatCompletionRequest:
    """POST /v1/chat/completions. Raises ApiRequestError."""
    for key in ("tools", "functions", "tool_choice", "function_call"):
        if data.get(key):
            raise ApiRequestError("this edge's models do not call tools", param=key)
    if data.get("logprobs") or data.get("top_logprobs"):
        raise ApiRequestError("log-probabilities are not returned by this edge", param="logprobs")
    response_format = data.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
        raise ApiRequestError("only text responses are supported on this edge", param="response_format")
    if integer(data, "n", 1, 1_000_000) not in (None, 1):
        raise ApiRequestError("n must be 1: the edge generates one choice per request", param="n")
    model_id = model_name(data.get("model"))
    messages = parse_messages(data.get("messages"))
    max_tokens = integer(data, "max_completion_tokens", 1, 1_000_000) or integer(data, "max_tokens", 1, 1_000_000)
    temperature = number(data, "temperature", 0.0, 2.0)
    top_p = number(data, "top_p", 0.0, 1.0)
    seed = integer(data, "seed", -(2**63), 2**63 - 1)
    stream = data.get("stream", False)
    if not isinstance(stream, bool | None):
        raise ApiRequestError("stream must be true or false", param="stream")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiRequestError("stream_options must be an object", param="stream_options")
    generation = GenerationRequest(
        model_id=model_id, messages=messages, max_new_tokens=max_tokens or 1_000_000,
        sampling=Sampling(temperature or 0.0, top_p if top_p else 1.0, seed), stop=stop_strings(data.get("stop")),
        mode=mode_option(data.get("mode"), modes),
    )
    return ChatCompletionRequest(generation, bool(stream), bool(options.get("include_usage")))


def _finish_reason(outcome: GenerationOutcome) -> str:
    return "stop" if outcome.done_reason == "stop" else "length"


def usage(outcome: GenerationOutcome) -> dict[str, int]:
    prompt, completion = len(outcome.prompt_ids), len(outcome.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(completion_id: str, created: int, outcome: GenerationOutcome) -> dict[str, Any]:
    """The non-streaming answer; `edgefleet` carries the mode that ran and the node's timings."""
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": outcome.model_id,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": outcome.text}, "logprobs": None,
                     "finish_reason": _finish_reason(outcome)}],
        "usage": usage(outcome),
        "system_fingerprint": f"edgefleet-{outcome.mode}",
        "edgefleet": edge_timings(outcome),
    }


def edge_timings(outcome: GenerationOutcome) -> dict[str, Any]:
    return {"mode": outcome.mode, "fallback": outcome.fallback, "load_s": round(outcome.load_s, 6),
            "prompt_eval_s": round(outcome.prompt_eval_s, 6), "eval_s": round(outcome.eval_s, 6),
            "total_s": round(outcome.total_s, 6)}


def chunk(completion_id: str, created: int, model_id: str, delta: dict[str, Any],
          finish_reason: str | None = None) -> dict[str, Any]:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_id,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def finish_chunk(completion_id: str, created: int, outcome: GenerationOutcome) -> dict[str, Any]:
    return chunk(completion_id, created, outcome.model_id, {}, _finish_reason(outcome))


def usage_chunk(completion_id: str, created: int, outcome: GenerationOutcome) -> dict[str, Any]:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": outcome.model_id,
            "choices": [], "usage": usage(outcome), "edgefleet": edge_timings(outcome)}


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event; `[DONE]` ends the stream."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def models(model_ids: list[tuple[str, int]]) -> dict[str, Any]:
    """GET /v1/models from (id, created) pairs."""
    return {"object": "list", "data": [model(model_id, created) for model_id, created in model_ids]}


def model(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


def error(message: str, status: int, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object; the type follows the status as OpenAI's own server sets it."""
    kind = {401: "authentication_error", 404: "invalid_request_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
