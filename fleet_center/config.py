"""The center's configuration: one frozen dataclass, every field with a default that runs locally."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.config import BusConfig
from fleet_center.round_routing import RoundRouting
from metrics.config import RecorderConfig
from runtime.settings import FLEET_DIR, check


@dataclass(frozen=True)
class RoundsConfig:
    offloading_rounds: int = 20  # task-offloading rounds before each model-caching round
    total_rounds: int = 21  # rounds to run (caching rounds included); 0 = keep going
    round_interval_s: float = 1.0  # pause between rounds
    wait_for_edges_s: float = 60.0  # at start, wait this long for at least min_edges
    min_edges: int = 1
    tasks_per_edge: float = 2.0  # Poisson mean of tasks arriving per edge per round
    arrival: str = "poisson"  # poisson | fixed
    seed: int = 0  # the workload's random seed (round r uses seed + r)
    task_deadline_s: float = 180.0  # a task not answered by then is reassigned
    max_attempts: int = 3  # dispatches per task before it is recorded as failed
    deploy_timeout_s: float = 300.0  # an edge not ready by then keeps its old placement
    models: tuple[str, ...] = (  # catalog the scheduler chooses from (the first is the cloud's model)
        "smollm2-135m", "smollm2-135m-q4", "smollm2-135m-int8w", "smollm2-135m-bf16", "smollm2-135m-int8",
        "smollm2-135m-edge20", "smollm2-135m-edge15",
    )
    # What every edge holds before the first caching round; empty = the fastest profiled model whose
    # held-out perplexity is within 2 % of fp32's (q4 on this machine: lossless and fastest).
    initial_model: str = ""
    max_new_tokens: int = 48  # per task
    edge_mode: str = "standalone"  # how edges run their tasks: standalone | collaborative (CE-CoLLM with the cloud)
    # | speculative (the edge drafts, the cloud verifies: the cloud's exact greedy answer)
    scheduler: str = "fast"  # fast | milp
    tasks_file: str = ""  # JSONL task set; empty = the shipped fleet_center/data/tasks.jsonl
    cloud_latency_s: float = 1.0  # modelled WAN + admission latency of a cloud task
    cloud_token_time_s: float = 0.05  # cloud seconds per token until measured
    # Quality against latency: an edge model may take a task type only if its planned quality (measured
    # mean, else its profile prior on the measured scale) is at least this share of the best model's.
    quality_keep: float = 0.9
    exploration_bonus: float = 0.3  # unmeasured (node, model) pairs are planned this much faster / better
    estimate_half_life_s: float = 600.0  # a learned token time counts half after this long without news
    model_store: str = ""  # the center's model store (profiles, artifacts); empty = default

    def __post_init__(self) -> None:
        check(self.offloading_rounds >= 1, "rounds.offloading_rounds", "must be >= 1")
        check(self.total_rounds >= 0, "rounds.total_rounds", "must be >= 0")
        check(self.arrival in ("poisson", "fixed"), "rounds.arrival", "must be poisson or fixed")
        check(self.task_deadline_s > 0, "rounds.task_deadline_s", "must be > 0")
        check(self.max_attempts >= 1, "rounds.max_attempts", "must be >= 1")
        check(self.scheduler in ("fast", "milp"), "rounds.scheduler", "must be fast or milp")
        check(self.edge_mode in ("standalone", "collaborative", "speculative"), "rounds.edge_mode",
              "must be standalone, collaborative or speculative")
        check(bool(self.models), "rounds.models", "must name at least one model")
        check(0.0 <= self.quality_keep <= 1.0, "rounds.quality_keep", "must be between 0 and 1")
        check(0.0 <= self.exploration_bonus < 1.0, "rounds.exploration_bonus", "must be in [0, 1)")
        check(self.estimate_half_life_s > 0, "rounds.estimate_half_life_s", "must be > 0")


@dataclass(frozen=True)
class CenterConfig:
    center_id: str = "center"  # the center's client id and broker user
    bus: BusConfig = field(default_factory=BusConfig)
    heartbeat_timeout_s: float = 6.0  # a node silent this long is offline (its Last Will usually comes first)
    tick_interval_s: float = 0.5  # how often silence is checked
    state_dir: str = str(FLEET_DIR / "center")  # SQLite state
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    run_rounds: bool = True  # False: membership only
    record_metrics: bool = True  # write metrics to the store in `metrics` (InfluxDB); never blocks the fleet
    metrics: RecorderConfig = field(default_factory=RecorderConfig)
    artifacts_host: str = "127.0.0.1"  # model artifact server (deployments); 0.0.0.0 to serve Pis on the LAN
    artifacts_port: int = 8700  # 0 = any free port
    artifacts_public_url: str = ""  # URL edges use to reach it; "" = http://host:port
    # Query routing in rounds (docs/routing.md): scheduler = no routing (the offloading scheduler places
    # tasks); edge_only | cloud_only | random | resource | miner route every task through its arrival edge.
    router: str = "scheduler"
    mining_mode: str = "mining_then_inference"  # the miner's: mining_then_inference | inference_then_mining
    router_cloud_probability: float = 0.5  # the random router's share of cloud queries

    def __post_init__(self) -> None:
        check(bool(self.center_id), "center_id", "must not be empty")
        check(self.heartbeat_timeout_s > 0, "heartbeat_timeout_s", "must be > 0")
        check(0 <= self.artifacts_port < 65536, "artifacts_port", f"{self.artifacts_port} is not a TCP port")
        RoundRouting(self.router, self.mining_mode, self.router_cloud_probability)  # raises ConfigError naming the key
        check(0 < self.tick_interval_s <= self.heartbeat_timeout_s, "tick_interval_s", "must be > 0 and <= heartbeat_timeout_s")
