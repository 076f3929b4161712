"""Ollama's API on the edge as pure functions: request bodies to `GenerationRequest`s, outcomes to Ollama's JSON.

Follows Ollama's REST API (docs/api.md of ollama/ollama): NDJSON streams whose last object has
`done: true` and the timings in nanoseconds; errors are `{"error": "..."}` with an HTTP status (the
`ollama` client raises `ResponseError` from either). Departures, all refused with a 400 rather than
silently ignored: images, tools, `format`, `suffix`, `template` and thinking. Options the edge does
not use (num_ctx, num_thread, ...) are ignored as Ollama ignores unknown ones; `options.mode` chooses
the collaboration mode.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from edge_node.compat_api.requests import (
    ApiRequestError,
    GenerationOutcome,
    GenerationRequest,
    Message,
    Sampling,
    integer,
    keep_alive_seconds,
    mode_option,
    model_name,
    number,
    parse_messages,
    stop_strings,
)
from edge_node.eviction_policy import ModelRecord
from models.manifest import Manifest

logger = logging.getLogger(__name__)

OLLAMA_VERSION = "0.6.3"  # the version of Ollama's API this edge answers as (GET /api/version)
_UNSUPPORTED = {"images": "this edge's models read text only", "tools": "this edge's models do not call tools",
                "format": "structured output (format) is not supported on this edge",
                "suffix": "fill-in-the-middle (suffix) is not supported on this edge",
                "template": "this edge uses each model's own chat template",
                "think": "this edge's models do not think aloud"}


@dataclass(frozen=True, slots=True)
class OllamaRequest:
    """A parsed /api/generate or /api/chat body. `generation` is None for a load/unload-only request."""

    model_id: str
    generation: GenerationRequest | None
    stream: bool
    keep_alive_s: float | None


def parse_generate(data: dict[str, Any], modes: tuple[str, ...]) -> OllamaRequest:
    """POST /api/generate. An empty prompt only loads the model (or unloads it with keep_alive 0)."""
    _refuse_unsupported(data)
    model_id = model_name(data.get("model"))
    prompt = _optional_str(data, "prompt")
    system = _optional_str(data, "system")
    raw = _flag(data, "raw", False)
    context = data.get("context") or []
    if not isinstance(context, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                for t in context):
        raise ApiRequestError("context must be a list of token ids", param="context")
    keep_alive_s = keep_alive_seconds(data.get("keep_alive"))
    stream = _flag(data, "stream", True)
    if not prompt:
        return OllamaRequest(model_id, None, stream, keep_alive_s)
    if raw:
        fields: dict[str, Any] = {"raw_prompt": prompt}
    else:
        turns = ((Message("system", system),) if system else ()) + (Message("user", prompt),)
        fields = {"messages": turns}
    return OllamaRequest(model_id, _request(model_id, data, modes, keep_alive_s, context=tuple(context), **fields),
                         stream, keep_alive_s)


def parse_chat(data: dict[str, Any], modes: tuple[str, ...]) -> OllamaRequest:
    """POST /api/chat. No messages only loads the model (or unloads it with keep_alive 0)."""
    _refuse_unsupported(data)
    model_id = model_name(data.get("model"))
    keep_alive_s = keep_alive_seconds(data.get("keep_alive"))
    stream = _flag(data, "stream", True)
    if not data.get("messages"):
        return OllamaRequest(model_id, None, stream, keep_alive_s)
    messages = parse_messages(data.get("messages"))
    return OllamaRequest(model_id, _request(model_id, data, modes, keep_alive_s, messages=messages), stream,
                         keep_alive_s)


def _request(model_id: str, data: dict[str, Any], modes: tuple[str, ...], keep_alive_s: float | None,
             **fields: Any) -> GenerationRequest:
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise ApiRequestError("options must be an object", param="options")
    num_predict = integer(options, "num_predict", -2, 1_000_000, "options.num_predict")
    temperature = number(options, "temperature", 0.0, 100.0, "options.temperature")
    top_p = number(options, "top_p", 0.0, 1.0, "options.top_p")
    seed = integer(options, "seed", -(2**63), 2**63 - 1, "options.seed")
    return GenerationRequest(
        model_id=model_id,
        # -1 (until the context is full) and -2 (fill the context): as many as the edge allows.
        max_new_tokens=num_predict if num_predict is not None and num_predict > 0 else 1_000_000,
        sampling=Sampling(temperature or 0.0, top_p if top_p else 1.0, seed),
        stop=stop_strings(options.get("stop"), "options.stop"),
        mode=mode_option(options.get("mode"), modes, "options.mode"),
        keep_alive_s=keep_alive_s,
        **fields,
    )


def _refuse_unsupported(data: dict[str, Any]) -> None:
    for key, why in _UNSUPPORTED.items():
        if data.get(key):
            raise ApiRequestError(why, param=key)
    for index, message in enumerate(data.get("messages") or []):
        if isinstance(message, dict) and message.get("tool_calls"):
            raise ApiRequestError(_UNSUPPORTED["tools"], param=f"messages[{index}].tool_calls")


def _optional_str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiRequestError(f"{key} must be a string", param=key)
    return value


def _flag(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiRequestError(f"{key} must be true or false", param=key)
    return value


# ---- responses ---------------------------------------------------------------------------------------


def created_at(timestamp: float) -> str:
    """RFC 3339 UTC with nanoseconds, as Ollama writes `created_at`."""
    seconds = int(timestamp)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((timestamp - seconds) * 1e9):09d}Z"


def generate_chunk(model_id: str, timestamp: float, text: str) -> dict[str, Any]:
    return {"model": model_id, "created_at": created_at(timestamp), "response": text, "done": False}


def chat_chunk(model_id: str, timestamp: float, text: str) -> dict[str, Any]:
    return {"model": model_id, "created_at": created_at(timestamp), "message": {"role": "assistant", "content": text},
            "done": False}


def generate_final(outcome: GenerationOutcome, timestamp: float, text: str) -> dict[str, Any]:
    """The last object of /api/generate: the text not yet sent ("" when streaming), the context and timings."""
    return {**generate_chunk(outcome.model_id, timestamp, text), "done": True, "done_reason": outcome.done_reason,
            "context": [*outcome.prompt_ids, *outcome.token_ids], **stats(outcome)}


def chat_final(outcome: GenerationOutcome, timestamp: float, text: str) -> dict[str, Any]:
    return {**chat_chunk(outcome.model_id, timestamp, text), "done": True, "done_reason": outcome.done_reason,
            **stats(outcome)}


def stats(outcome: GenerationOutcome) -> dict[str, Any]:
    """Ollama's timings in nanoseconds; the edge's extras (mode, fallback) beside them."""
    return {
        "total_duration": _ns(outcome.total_s),
        "load_duration": _ns(outcome.load_s),
        "prompt_eval_count": len(outcome.prompt_ids),
        "prompt_eval_duration": _ns(outcome.prompt_eval_s),
        "eval_count": len(outcome.token_ids),
        "eval_duration": _ns(outcome.eval_s),
        "mode": outcome.mode,
        "fallback": outcome.fallback,
    }


def load_only(model_id: str, timestamp: float, unloaded: bool, chat: bool) -> dict[str, Any]:
    """The answer to a request without a prompt: the model was loaded (or unloaded with keep_alive 0)."""
    shape = chat_chunk if chat else generate_chunk
    return {**shape(model_id, timestamp, ""), "done": True, "done_reason": "unload" if unloaded else "load"}


def details(manifest: Manifest) -> dict[str, Any]:
    return {"parent_model": "", "format": "safetensors", "family": "llama", "families": ["llama"],
            "parameter_size": parameter_size(manifest.parameters),
            "quantization_level": manifest.dtype.upper().replace("FLOAT", "F").replace("BFLOAT", "BF")}


def parameter_size(parameters: int) -> str:
    """134515008 -> "134.5M", as Ollama writes sizes."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            return f"{parameters / scale:.1f}{unit}"
    return str(parameters)


def digest(manifest: Manifest) -> str:
    """A digest of the stored files (their sha256s in the manifest), stable across nodes."""
    return hashlib.sha256("".join(entry.sha256 for _, entry in sorted(manifest.files.items())).encode()).hexdigest()


def tags(manifests: list[tuple[Manifest, float]]) -> dict[str, Any]:
    """GET /api/tags: every model in the store (with its files' modification time)."""
    return {"models": [{"name": m.id, "model": m.id, "modified_at": created_at(modified), "size": m.bytes,
                        "digest": digest(m), "details": details(m)} for m, modified in manifests]}


def ps(records: list[ModelRecord], manifests: dict[str, Manifest]) -> dict[str, Any]:
    """GET /api/ps: models in memory, with the cache's own view (pinned, in use, loading) beside Ollama's fields."""
    models = []
    for record in records:
        manifest = manifests.get(record.model_id)
        models.append({
            "name": record.model_id, "model": record.model_id, "size": record.size_bytes, "size_vram": 0,
            "digest": digest(manifest) if manifest else "", "details": details(manifest) if manifest else {},
            # Ollama writes a far-future time for a model kept forever; null keeps "never" readable here.
            "expires_at": created_at(record.expires_at) if record.expires_at is not None else None,
            "pinned": record.pinned, "in_use": record.in_use, "loading": record.loading,
        })
    return {"models": models}


def show(manifest: Manifest, chat_template: str, max_positions: int) -> dict[str, Any]:
    """POST /api/show: the model's details, its architecture in Ollama's model_info keys, and its template."""
    return {
        "modelfile": f"# edgefleet model {manifest.id} ({manifest.variant}, {manifest.source})\nFROM {manifest.id}\n",
        "parameters": "temperature 0",
        "template": chat_template,
        "details": details(manifest),
        "model_info": {
            "general.architecture": "llama", "general.parameter_count": manifest.parameters,
            "llama.block_count": manifest.layers, "llama.embedding_length": manifest.hidden_size,
            "llama.context_length": max_positions, "llama.vocab_size": manifest.vocab_size,
            "edgefleet.variant": manifest.variant, "edgefleet.exit_layers": list(manifest.exit_layers),
        },
        "capabilities": ["completion"],
    }


def error(message: str) -> dict[str, Any]:
    return {"error": message}


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))
