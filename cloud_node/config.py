"""The cloud node's configuration: one frozen dataclass, every field with a default that runs locally."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.config import BusConfig
from broker.messages.membership import valid_node_id
from runtime.settings import FLEET_DIR, check


@dataclass(frozen=True)
class CloudConfig:
    node_id: str = "cloud-1"  # this node's id: topic level and broker user
    bus: BusConfig = field(default_factory=BusConfig)
    heartbeat_interval_s: float = 2.0  # how often heartbeats go out
    state_dir: str = str(FLEET_DIR / "nodes")  # bdSeq counter and other small state
    model_store: str = ""  # model store root; "" = $EDGEFLEET_MODEL_STORE or <repo>/.fleet/models
    preload_model: str = ""  # model id loaded at start, so the first session does not wait for it; "" = none
    serve_inference: bool = True  # answer collaborative sessions and cloud-only generation
    session_ttl_s: float = 120.0  # idle seconds after which a session's context is forgotten
    memory_cap_bytes: int = 1 << 30  # hidden states + KV caches of all sessions; least recently used evicted above it
    max_positions: int = 4096  # positions per session (chunks beyond are rejected) and per cloud-only
    # generation (prompt + new tokens; a longer request is refused)
    janitor_interval_s: float = 1.0  # how often expired sessions are swept
    torch_threads: int = 0  # torch intra-op threads for this process; 0 = torch's default
    max_batch: int = 8  # cloud-only generations in flight in one continuous batch (and session requests per forward)
    batch_window_s: float = 0.02  # a batch not yet full waits this long (seconds) for more requests

    def __post_init__(self) -> None:
        check(valid_node_id(self.node_id), "node_id", f"{self.node_id!r} must be 1-64 of letters, digits, '-', '_', '.'")
        check(0.1 <= self.heartbeat_interval_s <= 3600, "heartbeat_interval_s", "must be between 0.1 and 3600")
        check(self.session_ttl_s > 0, "session_ttl_s", "must be > 0")
        check(self.memory_cap_bytes > 0, "memory_cap_bytes", "must be > 0")
        check(1 <= self.max_positions <= 65536, "max_positions", "must be 1-65536")
        check(0.01 <= self.janitor_interval_s <= 3600, "janitor_interval_s", "must be between 0.01 and 3600")
        check(0 <= self.torch_threads <= 256, "torch_threads", "must be 0-256")
        check(1 <= self.max_batch <= 256, "max_batch", "must be 1-256")
        check(0.0 <= self.batch_window_s <= 10.0, "batch_window_s", "must be 0-10 seconds")
