"""Pipeline inference from the center (issue 18): a request as JSON -> a run over the stage nodes -> text and figures.

`PipelineService.run(body)` is the whole API (seed 001's server call): a model id, the stage nodes
in ring order, an allocation list or "auto", the prompt, the token budget and reallocation on/off
with its three parameters. `serve()` puts it behind `POST /pipeline` on a small HTTP server.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from broker.client import BusClient
from broker.errors import BusError
from broker.messages.metrics import MetricPoint
from metrics.schema import now_ns
from models.errors import ModelStoreError
from models.store import ModelStore
from models.tokenizer import encode_chat, load_tokenizer
from pipeline.allocation import AllocationError, ModelShape, NodeCapability, parse_allocation
from pipeline.coordinator import (
    KV_MODES,
    CoordinatorConfig,
    PipelineCoordinator,
    PipelineError,
    PipelineRequest,
)
from pipeline.metrics import result_points
from pipeline.reallocation import ReallocationConfig
from pipeline.shapes import UnknownShapeError, shape_of_stored

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # a request body larger than this is refused (HTTP 413)


class BadPipelineRequest(ValueError):
    """The request body does not describe a pipeline run (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class PipelineApiConfig:
    host: str = "127.0.0.1"  # HTTP listen address
    port: int = 8091  # HTTP port; 0 = any free port
    stall_timeout_s: float = 60.0  # a run with no token for this long fails
    ready_timeout_s: float = 120.0  # stages must load their layers within this


def _field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None and default is None and name not in body:
        raise BadPipelineRequest(f"missing field {name!r}")
    if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, float, (int, float)):
        raise BadPipelineRequest(f"field {name!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def parse_body(body: Any, encode: Callable[[str, str], list[int]]) -> PipelineRequest:
    """A JSON body -> PipelineRequest. `encode(model_id, text)` tokenizes a text prompt. Raises BadPipelineRequest."""
    if not isinstance(body, dict):
        raise BadPipelineRequest("the body must be a JSON object")
    model_id = _field(body, "model_id", str)
    nodes = _field(body, "nodes", list)
    if not nodes or not all(isinstance(node, str) and node for node in nodes):
        raise BadPipelineRequest("nodes must be a non-empty list of node ids")
    allocation_field = body.get("allocation", "auto")
    if allocation_field == "auto":
        allocation = None
    elif isinstance(allocation_field, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in allocation_field):
        allocation = tuple(allocation_field)
    else:
        raise BadPipelineRequest(f"allocation must be \"auto\" or a list of layer counts, got {allocation_field!r}")
    if "prompt_ids" in body:
        prompt_ids = _field(body, "prompt_ids", list)
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt_ids):
            raise BadPipelineRequest("prompt_ids must be token ids")
    else:
        prompt_ids = encode(model_id, _field(body, "prompt", str))
    realloc = body.get("reallocation", {})
    if not isinstance(realloc, dict):
        raise BadPipelineRequest("reallocation must be an object")
    capabilities = []
    for entry in body.get("capabilities", []):
        if not isinstance(entry, dict):
            raise BadPipelineRequest("capabilities must be objects {node, speed, memory_bytes}")
        try:
            capabilities.append(NodeCapability(str(entry["node"]), float(entry["speed"]),
                                               int(entry.get("memory_bytes", 1 << 40)),
                                               float(entry.get("link_bytes_per_s", 100e6)),
                                               float(entry.get("link_latency_s", 0.001))))
        except (KeyError, TypeError, ValueError) as error:
            raise BadPipelineRequest(f"bad capability {entry!r}: {error}") from error
    kv_mode = body.get("kv_mode", "transfer")
    if kv_mode not in KV_MODES:
        raise BadPipelineRequest(f"kv_mode must be one of {KV_MODES}")
    try:
        policy = ReallocationConfig(
            enabled=bool(realloc.get("enabled", True)), threshold=float(realloc.get("threshold", 0.15)),
            min_tokens=int(realloc.get("min_tokens", 8)),
            performance_weight=float(realloc.get("performance_weight", 0.3)),
            objective=realloc.get("objective", "latency"))
        return PipelineRequest(model_id, tuple(nodes), tuple(prompt_ids), int(_field(body, "max_new_tokens", int, 32)),
                               allocation=allocation, capabilities=tuple(capabilities), reallocation=policy,
                               kv_mode=kv_mode, eos_token_id=int(body.get("eos_token_id", -1)))
    except (TypeError, ValueError, PipelineError) as error:
        raise BadPipelineRequest(str(error)) from error


class PipelineService:
    """Runs pipeline requests over the center's bus connection; records each run's points if it can."""

    def __init__(self, bus: BusClient, store: ModelStore, config: PipelineApiConfig = PipelineApiConfig(),
                 record: Callable[[list[MetricPoint]], None] | None = None) -> None:
        self.store = store
        self.record = record
        self._tokenizers: dict[str, Any] = {}

        def shape_of(model_id: str) -> ModelShape:
            try:
                return shape_of_stored(store, model_id)
            except UnknownShapeError as error:
                raise PipelineError(str(error)) from error

        self.coordinator = PipelineCoordinator(bus, shape_of, CoordinatorConfig(
            ready_timeout_s=config.ready_timeout_s, stall_timeout_s=config.stall_timeout_s))

    def _tokenizer(self, model_id: str) -> Any:
        if model_id not in self._tokenizers:
            if not self.store.has(model_id):
                raise BadPipelineRequest(f"unknown model {model_id!r} (have {self.store.list()})")
            try:
                self._tokenizers[model_id] = load_tokenizer(self.store.path(model_id))
            except (OSError, ValueError, ModelStoreError) as error:
                raise BadPipelineRequest(f"model {model_id!r} has no usable tokenizer: {error}") from error
        return self._tokenizers[model_id]

    def run(self, body: Any) -> dict[str, Any]:
        """Raises BadPipelineRequest (the request) or PipelineError (the run)."""
        request = parse_body(body, lambda model_id, text: encode_chat(self._tokenizer(model_id), text))
        try:
            shape = shape_of_stored(self.store, request.model_id)
            if request.allocation is not None:
                parse_allocation(request.node_ids, request.allocation, shape.num_layers)
        except (UnknownShapeError, AllocationError) as error:
            raise BadPipelineRequest(str(error)) from error
        started_ns = now_ns()
        result = self.coordinator.run(request)
        answer = result.as_dict()
        answer["text"] = str(self._tokenizer(request.model_id).decode(result.token_ids, skip_special_tokens=True))
        if self.record is not None:
            try:
                self.record(result_points(result, start_ns=started_ns))
            except Exception as error:  # a metric store being down never fails a generation
                logger.warning("pipeline %s: figures not recorded: %s", request.run_id, error)
        return answer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/pipeline":
            self._json(404, {"error": f"no such endpoint {self.path}; POST /pipeline"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
            self._json(200, self.server.service.run(body))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            self._json(400, {"error": f"body is not JSON: {error}"})
        except BadPipelineRequest as error:
            self._json(400, {"error": str(error)})
        except (PipelineError, BusError) as error:
            self._json(502, {"error": str(error)})

    def do_GET(self) -> None:
        self._json(405, {"error": "POST /pipeline with a JSON body"})

    def _json(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("pipeline api: %s", format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: PipelineService) -> None:
        super().__init__(address, _Handler)
        self.service = service


class PipelineHttpServer:
    """`POST /pipeline` in front of a PipelineService, on its own thread."""

    def __init__(self, service: PipelineService, config: PipelineApiConfig = PipelineApiConfig()) -> None:
        self._server = _Server((config.host, config.port), service)
        self._thread = threading.Thread(target=self._server.serve_forever, name="pipeline-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/pipeline"

    def start(self) -> PipelineHttpServer:
        self._thread.start()
        logger.info("pipeline API at %s", self.url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
