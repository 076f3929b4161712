"""The HTTP side of the familiar APIs: Ollama's /api/* and OpenAI's /v1/* routes on the edge's FastAPI app.

POST /api/generate, /api/chat   NDJSON stream (or one object with "stream": false), final object with timings
GET  /api/tags, /api/ps         models in the store / in memory;  POST /api/show  one model's details
GET  /api/version
POST /v1/chat/completions       SSE stream or one chat.completion;  GET /v1/models, /v1/models/{id}

Generation runs on the engine's generation threads; its text deltas cross to the event loop through
an asyncio queue, so a slow client never holds the model and a client that goes away ends a
standalone answer at its next token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from edge_node.compat_api import ollama_shapes, openai_shapes
from edge_node.compat_api.engine import EngineConfig, GenerationEngine
from edge_node.compat_api.requests import (
    ApiRequestError,
    GenerationOutcome,
    GenerationRequest,
    model_name,
    parse_body,
)
from edge_node.model_cache import CacheFullError

if TYPE_CHECKING:
    from edge_node.service import EdgeService

logger = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


def engine_for(service: EdgeService) -> GenerationEngine:
    """The service's one engine over its cache and store (made on first use; the cloud link is looked up per
    answer, as it is wired after the HTTP server)."""
    engine = _ENGINES.get(service)
    if engine is None:
        config = service.config
        engine = _ENGINES[service] = GenerationEngine(
            service.cache, service.store,
            collab=lambda: (service.executor.collab_client, service.executor.collab_config),
            config=EngineConfig(default_mode=config.api_mode, max_new_tokens=config.api_max_tokens,
                                parallel=config.api_parallel, max_waiting=config.queue_capacity,
                                early_exit=config.early_exit),
            budgets=service.executor.budgets,
        )
    return engine


_ENGINES: weakref.WeakKeyDictionary[EdgeService, GenerationEngine] = weakref.WeakKeyDictionary()


# ---- thread -> event loop ---------------------------------------------------------------------------


@dataclass
class _Running:
    """A generation whose model is loaded and whose prompt was accepted; its events arrive on `queue`."""

    queue: asyncio.Queue[tuple[str, Any]]
    cancel: threading.Event

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        """("text", str) ..., then ("done", GenerationOutcome) or ("error", ApiRequestError)."""
        try:
            while True:
                kind, value = await self.queue.get()
                yield kind, value
                if kind != "text":
                    return
        finally:
            self.cancel.set()  # the response ended early (client gone): stop at the next token

    async def collect(self) -> GenerationOutcome:
        async for kind, value in self.events():
            if kind == "error":
                raise value
            if kind == "done":
                return value  # type: ignore[no-any-return]
        raise AssertionError("a generation ends with done or error")


async def start(engine: GenerationEngine, request: GenerationRequest) -> _Running:
    """Start generating on a thread; returns once text can follow. Raises ApiRequestError (unknown model,
    prompt too long, busy) before anything is sent, so the client gets a proper status."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def put(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the server's loop is gone (shutdown): nobody is listening
            cancel.set()

    def finished(future: Future[GenerationOutcome]) -> None:
        try:
            outcome = future.result()
        except ApiRequestError as error:
            put("error", error)
        except Exception as error:  # one request's failure must not take the node down
            logger.error("API generation with %s failed", request.model_id, exc_info=error)
            put("error", ApiRequestError(f"{type(error).__name__}: {error}", status=500, code="generation_failed"))
        else:
            put("done", outcome)

    future = engine.submit(request, on_text=lambda text: put("text", text), on_start=lambda: put("start", None),
                           cancelled=cancel.is_set)
    future.add_done_callback(finished)
    kind, value = await queue.get()
    if kind == "error":
        raise value
    assert kind == "start", f"a generation starts with start or error, got {kind}"
    return _Running(queue, cancel)


async def _body(request: Request, limit: int) -> dict[str, Any]:
    body = await request.body()
    if len(body) > limit:
        raise ApiRequestError(f"body of {len(body)} B is over the limit of {limit} B", status=413)
    return parse_body(body)


# ---- Ollama ---------------------------------------------------------------------------------------------


def ollama_router(service: EdgeService, engine: GenerationEngine) -> APIRouter:
    router = APIRouter()
    limit = service.config.max_body_bytes

    def failed(error: ApiRequestError) -> JSONResponse:
        return JSONResponse(ollama_shapes.error(str(error)), status_code=error.status)

    async def answer(request: Request, parse: Callable[..., ollama_shapes.OllamaRequest], chat: bool) -> Response:
        try:
            parsed = parse(await _body(request, limit), engine.modes)
            if parsed.generation is None:
                return await _load_only(service, engine, parsed, chat)
            running = await start(engine, parsed.generation)
        except ApiRequestError as error:
            return failed(error)
        chunk = ollama_shapes.chat_chunk if chat else ollama_shapes.generate_chunk
        final = ollama_shapes.chat_final if chat else ollama_shapes.generate_final
        if not parsed.stream:
            try:
                outcome = await running.collect()
            except ApiRequestError as error:
                return failed(error)
            return JSONResponse(final(outcome, time.time(), outcome.text))

        async def lines() -> AsyncIterator[bytes]:
            async for kind, value in running.events():
                if kind == "text":
                    body = chunk(parsed.model_id, time.time(), value)
                elif kind == "done":
                    body = final(value, time.time(), "")
                else:
                    body = ollama_shapes.error(str(value))
                yield json.dumps(body, separators=(",", ":")).encode() + b"\n"

        return StreamingResponse(lines(), media_type=NDJSON)

    @router.post("/api/generate")
    async def generate(request: Request) -> Response:
        return await answer(request, ollama_shapes.parse_generate, chat=False)

    @router.post("/api/chat")
    async def chat(request: Request) -> Response:
        return await answer(request, ollama_shapes.parse_chat, chat=True)

    @router.get("/api/tags")
    async def tags() -> JSONResponse:
        manifests = []
        for model_id in service.store.list():
            try:
                manifests.append((service.store.manifest(model_id), _modified(service.store.path(model_id))))
            except Exception as error:  # one unreadable manifest must not hide the others
                logger.warning("%s: /api/tags skips %s: %s", service.node_id, model_id, error)
        return JSONResponse(ollama_shapes.tags(manifests))

    @router.get("/api/ps")
    async def ps() -> JSONResponse:
        records = service.cache.status()
        manifests = {}
        for record in records:
            try:
                manifests[record.model_id] = service.store.manifest(record.model_id)
            except Exception:  # deployed over since it loaded: the cache's own figures still stand
                pass
        return JSONResponse(ollama_shapes.ps(records, manifests))

    @router.post("/api/show")
    async def show(request: Request) -> JSONResponse:
        try:
            data = await _body(request, limit)
            model_id = model_name(data.get("model") or data.get("name"))
            engine.check_model(model_id)
            directory = service.store.path(model_id)
            template_file = directory / "chat_template.jinja"
            template = template_file.read_text() if template_file.is_file() else ""
            positions = int(json.loads((directory / "config.json").read_text()).get("max_position_embeddings", 0))
            return JSONResponse(ollama_shapes.show(service.store.manifest(model_id), template, positions))
        except ApiRequestError as error:
            return failed(error)

    @router.get("/api/version")
    async def version() -> JSONResponse:
        return JSONResponse({"version": ollama_shapes.OLLAMA_VERSION})

    return router


async def _load_only(service: EdgeService, engine: GenerationEngine, parsed: ollama_shapes.OllamaRequest,
                     chat: bool) -> JSONResponse:
    """A request without a prompt: load the model (kept per keep_alive), or unload it with keep_alive 0."""
    engine.check_model(parsed.model_id)
    unload = parsed.keep_alive_s == 0
    if unload:
        service.cache.evict(parsed.model_id)
    else:
        def load() -> None:
            with service.cache.use(parsed.model_id, keep_alive_s=parsed.keep_alive_s):
                pass

        try:
            await anyio.to_thread.run_sync(load)
        except CacheFullError as error:
            raise ApiRequestError(str(error), status=503, code="no_room") from None
        except Exception as error:  # a failed load: the node goes on serving
            raise ApiRequestError(str(error), status=500, code="model_load_failed") from None
    return JSONResponse(ollama_shapes.load_only(parsed.model_id, time.time(), unload, chat))


def _modified(directory: Path) -> float:
    try:
        return (directory / "manifest.json").stat().st_mtime
    except OSError:
        return 0.0


# ---- OpenAI ---------------------------------------------------------------------------------------------


def openai_router(service: EdgeService, engine: GenerationEngine) -> APIRouter:
    router = APIRouter()
    limit = service.config.max_body_bytes

    def failed(error: ApiRequestError) -> JSONResponse:
        return JSONResponse(openai_shapes.error(str(error), error.status, error.param, error.code),
                            status_code=error.status)

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            parsed = openai_shapes.parse_chat_completion(await _body(request, limit), engine.modes)
            running = await start(engine, parsed.generation)
        except ApiRequestError as error:
            return failed(error)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not parsed.stream:
            try:
                outcome = await running.collect()
            except ApiRequestError as error:
                return failed(error)
            return JSONResponse(openai_shapes.completion(completion_id, created, outcome))
        model_id = parsed.generation.model_id

        async def events() -> AsyncIterator[bytes]:
            yield openai_shapes.sse(openai_shapes.chunk(completion_id, created, model_id,
                                                        {"role": "assistant", "content": ""}))
            async for kind, value in running.events():
                if kind == "text":
                    yield openai_shapes.sse(openai_shapes.chunk(completion_id, created, model_id, {"content": value}))
                elif kind == "done":
                    yield openai_shapes.sse(openai_shapes.finish_chunk(completion_id, created, value))
                    if parsed.include_usage:
                        yield openai_shapes.sse(openai_shapes.usage_chunk(completion_id, created, value))
                else:
                    yield openai_shapes.sse(openai_shapes.error(str(value), value.status, value.param, value.code))
            yield openai_shapes.sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @router.get("/v1/models")
    async def list_models() -> JSONResponse:
        return JSONResponse(openai_shapes.models(
            [(model_id, int(_modified(service.store.path(model_id)))) for model_id in service.store.list()]))

    @router.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> JSONResponse:
        try:
            name = model_name(model_id)
            engine.check_model(name)
        except ApiRequestError as error:
            return failed(error)
        return JSONResponse(openai_shapes.model(name, int(_modified(service.store.path(name)))))

    return router
