"""Membership messages: center state, node birth/death (Sparkplug-style bdSeq), heartbeats, commands."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NewType

from broker.messages.codec import Message, require

NodeId = NewType("NodeId", str)
ModelId = NewType("ModelId", str)

NodeRole = Literal["edge", "cloud", "center"]


def valid_node_id(node_id: str) -> bool:
    """A node id is one topic level: 1-64 chars of letters, digits, '-', '_' or '.'."""
    return 0 < len(node_id) <= 64 and all(ch.isalnum() or ch in "-_." for ch in node_id) and node_id.isascii()


@dataclass(frozen=True, slots=True)
class CenterState(Message):
    """Retained on `state/center`; the center's Last Will publishes online=False."""

    TAG = "center_state"
    online: bool
    center_id: str
    timestamp: float  # unix seconds


@dataclass(frozen=True, slots=True)
class LoadedModelStatus(Message):
    """One model held in a node's memory."""

    TAG = "loaded_model"
    model_id: str
    bytes: int
    pinned: bool = False
    in_use: int = 0
    expires_at: float | None = None  # unix seconds; None = kept forever

    def __post_init__(self) -> None:
        require(self.bytes >= 0, "bytes must be >= 0")
        require(self.in_use >= 0, "in_use must be >= 0")


@dataclass(frozen=True, slots=True)
class Capabilities(Message):
    """What a node can do, measured at start-up."""

    TAG = "capabilities"
    cores: int
    memory_bytes: int
    gflops: float  # measured fp32 matmul throughput
    bandwidth_mbps: float = 0.0  # 0 = not measured
    http_url: str = ""  # the node's HTTP API, if it serves one
    host_id: str = ""  # names the machine: nodes sharing one share its cores ("" = unknown)

    def __post_init__(self) -> None:
        require(1 <= self.cores <= 4096, "cores out of range")
        require(self.memory_bytes > 0, "memory_bytes must be > 0")
        require(self.gflops >= 0, "gflops must be >= 0")
        require(self.bandwidth_mbps >= 0, "bandwidth_mbps must be >= 0")


@dataclass(frozen=True, slots=True)
class NodeBirth(Message):
    """Retained on `nodes/{node}/birth`: a node's session starts (bd_seq identifies the session)."""

    TAG = "node_birth"
    MAX_BYTES = 256 * 1024
    node_id: str
    role: NodeRole
    bd_seq: int
    capabilities: Capabilities
    timestamp: float
    models_in_store: tuple[str, ...] = ()
    loaded_models: tuple[LoadedModelStatus, ...] = ()

    def __post_init__(self) -> None:
        require(valid_node_id(self.node_id), f"invalid node id {self.node_id!r}")
        require(0 <= self.bd_seq < 2**63, "bd_seq out of range")
        require(len(self.models_in_store) <= 1000, "too many models in store")


@dataclass(frozen=True, slots=True)
class NodeDeath(Message):
    """Last Will on `nodes/{node}/death`, also published on a clean shutdown."""

    TAG = "node_death"
    node_id: str
    bd_seq: int

    def __post_init__(self) -> None:
        require(valid_node_id(self.node_id), f"invalid node id {self.node_id!r}")
        require(0 <= self.bd_seq < 2**63, "bd_seq out of range")


# Heartbeat counters that count inputs a node refused (bus: undecodable or misaddressed messages; edge: HTTP
# 4xx; cloud: sessions opened or written in another edge's name, rejected hidden-state chunks).
REJECTED_INPUT_COUNTERS = ("malformed", "http_rejected", "impersonations_refused", "chunks_rejected")


def rejected_inputs(counters: dict[str, float]) -> int:
    """Inputs a node refused since it started, from its heartbeat counters."""
    return int(sum(counters.get(name, 0.0) for name in REJECTED_INPUT_COUNTERS))


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """QoS 0 on `nodes/{node}/heartbeat`, every heartbeat interval."""

    TAG = "heartbeat"
    MAX_BYTES = 128 * 1024
    node_id: str
    bd_seq: int
    seq: int
    timestamp: float
    cpu_percent: float
    memory_percent: float
    memory_used_bytes: int
    load_avg_1m: float
    queue_depth: int = 0
    loaded_models: tuple[LoadedModelStatus, ...] = ()
    counters: dict[str, float] = field(default_factory=dict)  # e.g. malformed_messages, sessions
    gflops: float = 0.0  # best recent matmul probe (re-measured periodically); 0 = not measured yet

    def __post_init__(self) -> None:
        require(valid_node_id(self.node_id), f"invalid node id {self.node_id!r}")
        require(self.seq >= 0, "seq must be >= 0")
        require(0 <= self.cpu_percent <= 100 * 4096, "cpu_percent out of range")
        require(0 <= self.memory_percent <= 100, "memory_percent out of range")
        require(self.queue_depth >= 0, "queue_depth must be >= 0")
        require(self.gflops >= 0, "gflops must be >= 0")


CommandKind = Literal["rebirth", "deploy_model", "unload_model", "drain", "stop"]


@dataclass(frozen=True, slots=True)
class NodeCommand(Message):
    """Center → node on `nodes/{node}/cmd`."""

    TAG = "node_command"
    command_id: str
    kind: CommandKind
    model_id: str = ""
    model_version: str = ""
    sha256: str = ""
    url: str = ""
    pin: bool = False

    def __post_init__(self) -> None:
        require(0 < len(self.command_id) <= 128, "command_id must be 1-128 chars")
        if self.kind in ("deploy_model", "unload_model"):
            require(bool(self.model_id), f"{self.kind} needs a model_id")
