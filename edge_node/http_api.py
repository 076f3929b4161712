"""The edge node's HTTP API (FastAPI on uvicorn, in a background thread).

POST /perform_task   {"task_type", "model_name", "prompt"} or a full task object ("route": "auto" / "cloud" routes the
                     whole query, docs/routing.md); 202 + task id to poll,
                     or 200 + result with "wait": true. 400 bad body, 404 unknown model, 413 too big,
                     503 queue full.
GET  /tasks/{id}     200 result, 202 still queued/running, 404 unknown id
GET  /health         200 ok / degraded (bus down), 503 unavailable (worker dead, stopping, queue full)
Ollama's /api/* (generate, chat, tags, ps, show) and OpenAI's /v1/* (chat/completions, models): compat_api/routes.py

Bound beyond loopback, every route but /health needs `Authorization: Bearer <token>` (401 otherwise).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from broker.messages import TaskResult
from edge_node.compat_api.routes import engine_for, ollama_router, openai_router
from edge_node.task_queue import QueueClosedError, QueueError, QueueFullError
from edge_node.task_requests import RequestError, parse_task_request
from security.tokens import bearer_matches

if TYPE_CHECKING:
    from edge_node.service import EdgeService

logger = logging.getLogger(__name__)


def result_json(result: TaskResult) -> dict[str, Any]:
    body: dict[str, Any] = {name: getattr(result, name) for name in result.__dataclass_fields__}
    body["tokens"] = [{name: getattr(t, name) for name in t.__dataclass_fields__} for t in result.tokens]
    return body


def create_app(service: EdgeService, max_body_bytes: int, token: str = "") -> FastAPI:
    """The API; with a `token`, every route but /health answers 401 unless `Authorization: Bearer <token>`."""
    app = FastAPI(title=f"edgefleet edge {service.node_id}", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        """Checks the token, and counts refused requests for the heartbeat's `http_rejected` counter."""
        if token and request.url.path != "/health" and not bearer_matches(request.headers.get("authorization"), token):
            response: Any = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        else:
            response = await call_next(request)
        if 400 <= response.status_code < 500:
            service.http_rejected += 1
        return response

    @app.post("/perform_task")
    async def perform_task(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > max_body_bytes:
            return _error(413, f"body of {len(body)} B is over the limit of {max_body_bytes} B")
        try:
            parsed = parse_task_request(body, now=time.time())
        except RequestError as error:
            return _error(400, str(error))
        try:
            service.submit(parsed.task)
        except LookupError as error:
            return _error(404, str(error))
        except QueueFullError as error:
            return _error(503, str(error))
        except QueueClosedError:
            return _error(503, "node is shutting down")
        except QueueError as error:  # duplicate task id
            return _error(409, str(error))
        if not parsed.wait:
            return JSONResponse({"task_id": parsed.task.task_id, "status": "queued",
                                 "poll": f"/tasks/{parsed.task.task_id}"}, status_code=202)
        import anyio.to_thread

        state = await anyio.to_thread.run_sync(service.results.wait, parsed.task.task_id, parsed.wait_timeout_s)
        return _state_response(parsed.task.task_id, state)

    @app.get("/tasks/{task_id}")
    async def task_status(task_id: str) -> JSONResponse:
        state = service.results.get(task_id)
        if state is None:
            return _error(404, f"no task {task_id!r} on this node (results are kept for the last {service.results.capacity})")
        return _state_response(task_id, state)

    @app.get("/health")
    async def health() -> JSONResponse:
        verdict, figures = service.health()
        return JSONResponse({"status": verdict.status, "problems": list(verdict.problems), **figures},
                            status_code=verdict.http_status)

    engine = engine_for(service)
    app.include_router(ollama_router(service, engine))
    app.include_router(openai_router(service, engine))
    return app


def _state_response(task_id: str, state: object) -> JSONResponse:
    if isinstance(state, TaskResult):
        return JSONResponse(result_json(state), status_code=200)
    return JSONResponse({"task_id": task_id, "status": state}, status_code=202)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class HttpServer:
    """uvicorn in a daemon thread on a socket we bind ourselves (port 0 = any free port)."""

    def __init__(self, service: EdgeService, host: str, port: int, max_body_bytes: int, token: str = "") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(create_app(service, max_body_bytes, token), log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="edge-http",
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError(f"HTTP server did not start on {self.url} within {timeout_s} s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5.0)
