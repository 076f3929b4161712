"""The edge node's configuration: one frozen dataclass, every field with a default that runs locally."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.config import BusConfig
from broker.messages.membership import valid_node_id
from edge_node.collab.config import DRAFT_SOURCES, MODES
from emulation.cpu_quota import check_quota
from routing.escalation import EscalationRule
from runtime.settings import FLEET_DIR, check


@dataclass(frozen=True)
class EdgeConfig:
    node_id: str = "pi-01"  # this node's id: topic level and broker user
    bus: BusConfig = field(default_factory=BusConfig)
    heartbeat_interval_s: float = 2.0  # how often heartbeats go out
    state_dir: str = str(FLEET_DIR / "nodes")  # bdSeq counter, CSV log (per node id)
    model_store: str = ""  # model store directory; empty = $EDGEFLEET_MODEL_STORE or .fleet/models
    http_host: str = "127.0.0.1"  # HTTP API address; 0.0.0.0 on a Pi serving the LAN
    http_port: int = 8081  # HTTP API port; 0 = any free port
    # Bearer token of the HTTP API (docs/security.md): required beyond loopback; empty = read from (or
    # created in) http_token_file then; on loopback an empty token means no check.
    http_token: str = ""
    http_token_file: str = str(FLEET_DIR / "secrets" / "{node}.http_token")  # {node} = node id
    center_public_key_file: str = str(FLEET_DIR / "secrets" / "center_signing.pub")  # checks signed model indexes
    queue_capacity: int = 64  # queued tasks before new ones are refused (HTTP 503)
    keep_alive_s: float = 300.0  # idle seconds before a model unloads; 0 = at once; < 0 = never
    max_loaded_models: int = 2  # models resident at once
    memory_budget_mb: int = 0  # MB of models resident at once; 0 = 60 % of available memory at start
    cache_wait_s: float = 30.0  # a task waits this long for room in the cache before failing
    early_exit: bool = True  # use a model's calibrated exit heads in standalone generation
    csv_path: str = ""  # per-task CSV log; empty = <state_dir>/<node_id>/llm_metrics.csv
    results_kept: int = 1000  # finished results kept for GET /tasks/{id}
    max_body_bytes: int = 256 * 1024  # larger HTTP bodies are refused (413)
    # Ollama / OpenAI APIs (edge_node/compat_api/): a request's options.mode / "mode" beats api_mode.
    api_mode: str = "standalone"  # collaboration mode of API requests naming none (edge_node/collab/config.py MODES)
    api_max_tokens: int = 512  # most tokens one API answer generates (num_predict / max_tokens are capped to it)
    api_parallel: int = 1  # API answers generated at once; more wait (up to queue_capacity, then HTTP 503)
    # Catalog variants (manifest `variant`: fp32, bf16, int8, q4, int8w, edge) a deploy may make resident;
    # () = all. The Pi installer sets them from the board's memory (docs/pi.md).
    model_variants: tuple[str, ...] = ()
    split_layer: int = 20  # collaborative mode: the edge runs layers [0, split), the cloud the rest
    speculative_split_layer: int = 0  # speculative mode drafts at this layer where the model has a head; 0 = split_layer
    # Speculative mode: choose the drafting split per answer (split_layer or a deeper head) from what earlier
    # answers measured: a slow edge drafts shallow, a fast one deep (docs/collaboration.md)
    speculative_split_auto: bool = False
    # Speculative mode's drafter: "model" (the whole model drafts, its layer-k rows go to the cloud) or "exits"
    # (layers [0, split) and the exit heads, for an edge that cannot afford the layers past the split)
    speculative_draft: str = "model"
    cloud_deadline_s: float = 5.0  # collaborative mode: cloud silent this long -> finish the answer locally
    # Collaborative mode: hold the expected share of tokens equal to the full model's at this level by moving
    # the exit thresholds as answers go (edge_node/collab/agreement_budget.py); 0 = keep them fixed.
    collab_agreement_target: float = 0.91
    torch_threads: int = 0  # intra-op threads; 0 = torch's default (all cores). Several nodes on one host: 1
    # Emulated edge speed (emulation/cpu_quota.py): the fraction of one core this node may use, e.g. 0.25
    # for a Raspberry Pi next to a server; 0 = unlimited. A cgroup where writable, else per-layer delays.
    cpu_quota: float = 0.0
    # Query routing (docs/routing.md): "route": "cloud" / "auto" tasks. The cloud answers routed queries with
    # this model; miners are read from miner_dir/miner-<edge model>.json (empty = routing/data of this checkout).
    router_cloud_model: str = "smollm2-135m"
    miner_dir: str = ""
    # Inference-then-mining's rule: unset = the one fitted for the edge model (miner_dir/escalation-<model>.json),
    # else (0.55, 0.3). Mean token probability below the first, or repeated word 3-grams above the second, escalate.
    escalate_min_confidence: float | None = None
    escalate_max_repetition: float | None = None
    router_cloud_timeout_s: float = 120.0  # a routed query's whole answer from the cloud; past it the edge answers
    stop_wait_s: float = 8.0  # on stop, how long the running task may take to end and report (make run allows 10)

    def __post_init__(self) -> None:
        check(valid_node_id(self.node_id), "node_id", f"{self.node_id!r} must be 1-64 of letters, digits, '-', '_', '.'")
        check(0.1 <= self.heartbeat_interval_s <= 3600, "heartbeat_interval_s", "must be between 0.1 and 3600")
        check(0 <= self.http_port < 65536, "http_port", f"{self.http_port} is not a TCP port")
        check(1 <= self.queue_capacity <= 100_000, "queue_capacity", "must be 1-100000")
        check(1 <= self.max_loaded_models <= 64, "max_loaded_models", "must be 1-64")
        check(self.memory_budget_mb >= 0, "memory_budget_mb", "must be >= 0")
        check(self.cache_wait_s >= 0, "cache_wait_s", "must be >= 0")
        check(self.results_kept >= 1, "results_kept", "must be >= 1")
        check(self.split_layer >= 1, "split_layer", "must be >= 1")
        check(self.speculative_split_layer >= 0, "speculative_split_layer", "must be >= 0 (0: split_layer)")
        check(self.speculative_draft in DRAFT_SOURCES, "speculative_draft", f"must be one of {DRAFT_SOURCES}")
        check(self.cloud_deadline_s > 0, "cloud_deadline_s", "must be > 0")
        check(self.collab_agreement_target == 0.0 or 0.5 <= self.collab_agreement_target < 1.0,
              "collab_agreement_target", "must be 0 (fixed thresholds) or within 0.5..1 (excluded)")
        check(self.torch_threads >= 0, "torch_threads", "must be >= 0")
        check(self.stop_wait_s >= 0, "stop_wait_s", "must be >= 0")
        check(not check_quota(self.cpu_quota), "cpu_quota", check_quota(self.cpu_quota))
        for key in ("escalate_min_confidence", "escalate_max_repetition"):
            value = getattr(self, key)
            check(value is None or 0.0 <= value <= 1.0, key, "must be within 0..1")
        check(bool(self.router_cloud_model), "router_cloud_model", "must name a model")
        check(self.router_cloud_timeout_s > 0, "router_cloud_timeout_s", "must be > 0")
        check(self.max_body_bytes >= 1024, "max_body_bytes", "must be >= 1024")
        check(self.api_mode in MODES, "api_mode", f"{self.api_mode!r} is not one of {MODES}")
        check(1 <= self.api_max_tokens <= 100_000, "api_max_tokens", "must be 1-100000")
        check(1 <= self.api_parallel <= 64, "api_parallel", "must be 1-64")

    def escalation_rule(self) -> EscalationRule | None:
        """The operator's inference-then-mining rule, or None to use the edge model's fitted one."""
        if self.escalate_min_confidence is None and self.escalate_max_repetition is None:
            return None
        default = EscalationRule()
        return EscalationRule(default.min_confidence if self.escalate_min_confidence is None else self.escalate_min_confidence,
                              default.max_repetition if self.escalate_max_repetition is None else self.escalate_max_repetition)
