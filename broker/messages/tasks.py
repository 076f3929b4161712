"""Task messages: the center's dispatch batches, the nodes' results, and model deployment status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from broker.messages.codec import Message, require
from broker.messages.membership import valid_node_id

TaskStatus = Literal["ok", "error", "expired", "refused"]
TokenSource = Literal["edge", "cloud"]
ROUTES = ("", "edge", "cloud", "auto")  # TaskSpec.route
MINING_MODES = ("mining_then_inference", "inference_then_mining")  # TaskSpec.mining_mode
# Who decided a token (the decoding core's `models.decode_loop.DecidedBy`, kept equal by a test): an
# edge exit head, the local model's own head, the cloud, the edge after the cloud fell silent, or a
# speculative draft the verifier accepted / replaced with its correction.
TokenDecider = Literal["exit", "head", "cloud", "fallback", "draft_accepted", "draft_corrected"]


@dataclass(frozen=True, slots=True)
class TaskSpec(Message):
    """One unit of LLM work. `task_type` is one of TC/NER/QA/TS/SG, or any other name for a plain chat turn."""

    TAG = "task"
    MAX_BYTES = 64 * 1024
    task_id: str
    task_type: str
    prompt: str
    model_id: str
    round_id: int = -1  # -1: not part of a round (HTTP callers)
    priority: int = 0  # higher runs first
    deadline: float = 0.0  # unix seconds; 0 = none
    max_new_tokens: int = 64
    keep_alive_s: float | None = None  # per-request model keep-alive override
    mode: str = "standalone"  # standalone | collaborative | speculative | cloud_only | naive_split
    # Query routing (routing/): "" runs the task where it was sent; "edge" the same; "cloud" forwards the
    # whole query to the cloud; "auto" lets the edge's hard-example miner decide, in `mining_mode`.
    route: str = ""
    mining_mode: str = "mining_then_inference"  # mining_then_inference | inference_then_mining
    cloud_model_id: str = ""  # model a routed query runs on in the cloud; "" = the edge's default

    def __post_init__(self) -> None:
        require(0 < len(self.task_id) <= 128, "task_id must be 1-128 chars")
        require(self.route in ROUTES, f"route must be one of {ROUTES}")
        require(self.mining_mode in MINING_MODES, f"mining_mode must be one of {MINING_MODES}")
        require(len(self.cloud_model_id) <= 128, "cloud_model_id must be at most 128 chars")
        require(0 < len(self.task_type) <= 64, "task_type must be 1-64 chars")
        require(0 < len(self.model_id) <= 128, "model_id must be 1-128 chars")
        require(1 <= self.max_new_tokens <= 4096, "max_new_tokens must be 1-4096")
        require(-1000 <= self.priority <= 1000, "priority must be -1000..1000")
        require(self.deadline >= 0, "deadline must be >= 0")


@dataclass(frozen=True, slots=True)
class TaskDispatch(Message):
    """Center → node on `tasks/{node}/dispatch`: a batch of one round's tasks."""

    TAG = "task_dispatch"
    MAX_BYTES = 4 * 1024 * 1024
    round_id: int
    tasks: tuple[TaskSpec, ...]
    sent_at: float

    def __post_init__(self) -> None:
        require(len(self.tasks) <= 10_000, "at most 10,000 tasks per dispatch")


@dataclass(frozen=True, slots=True)
class TokenRecord(Message):
    """How one generated token was decided."""

    TAG = "token_record"
    VERSION = 2  # v2: decided_by + layer replace source + exit_layer (-1 for full depth)
    position: int
    token_id: int
    latency_ms: float
    decided_by: TokenDecider = "head"
    layer: int = 0  # decoder layers the deciding state went through (exit layer, split layer, model depth)
    bytes_up: int = 0
    bytes_down: int = 0

    def __post_init__(self) -> None:
        require(self.position >= 0, "position must be >= 0")
        require(self.layer >= 0, "layer must be >= 0")

    @property
    def source(self) -> TokenSource:
        """Where the token was decided: the cloud, or the edge (exits, its own head, fallback, drafts it made)."""
        return "cloud" if self.decided_by in ("cloud", "draft_corrected") else "edge"

    @property
    def exit_layer(self) -> int | None:
        """The exit head's layer for a token an exit decided, else None."""
        return self.layer if self.decided_by == "exit" else None


@dataclass(frozen=True, slots=True)
class TaskResult(Message):
    """Node → center on `tasks/{node}/result` (also the HTTP API's result body)."""

    TAG = "task_result"
    MAX_BYTES = 4 * 1024 * 1024
    task_id: str
    node_id: str
    status: TaskStatus
    model_id: str = ""
    task_type: str = ""
    round_id: int = -1
    answer: str = ""
    parsed: dict[str, Any] = field(default_factory=dict)  # structured result from the prompt parser
    error: str = ""
    queue_wait_s: float = 0.0
    load_time_s: float = 0.0
    ttft_s: float = 0.0
    total_s: float = 0.0
    tokens: tuple[TokenRecord, ...] = ()
    finished_at: float = 0.0
    # Where a routed query was answered: "" not routed, "edge", "cloud", or "escalated" (the edge answered,
    # its answer looked hard, the cloud answered again); the router's number and reason behind it.
    route: str = ""
    route_score: float = 0.0
    route_reason: str = ""

    def __post_init__(self) -> None:
        require(valid_node_id(self.node_id), f"invalid node id {self.node_id!r}")
        require(self.status == "ok" or bool(self.error), "a failed result must carry an error")


ModelState = Literal["downloading", "verifying", "ready", "failed", "unloaded"]


@dataclass(frozen=True, slots=True)
class ModelStatus(Message):
    """Node → center on `models/{node}/status`: deployment progress of one model."""

    TAG = "model_status"
    node_id: str
    model_id: str
    state: ModelState
    command_id: str = ""
    progress: float = 0.0  # 0..1 of the bytes
    reason: str = ""
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        require(valid_node_id(self.node_id), f"invalid node id {self.node_id!r}")
        require(0.0 <= self.progress <= 1.0, "progress must be within 0..1")
        require(self.state != "failed" or bool(self.reason), "a failed deployment must carry a reason")
