"""Pipeline inference over three stage processes under CPU quotas: static even, static best, dynamic (issue 18).

    .venv/bin/python -m benchmarks.pipeline --json

A real Mosquitto, three `python -m pipeline` stage processes (one torch thread each) at 0.5 / 0.25 /
1.0 of a core in ring order (the last stage also runs the LM head), the real SmolLM2-135M, greedy
decoding with a fixed token budget. The speeds are emulated by default with the per-pass delay of
emulation/pass_delay.py (CPU time / quota), scaled by `--scale` (0.05: quota q runs at 0.05 q of this
core) so that the host's own load (other jobs on the 2 cores) stays below the emulated time;
`--emulation cgroup` uses cgroup CPU quotas instead (bursty: see pass_delay.py). Runs, in one process tree:
1. `static_even`: 10/10/10 layers, no reallocation; its per-node measured speeds are the "full
   knowledge" from which `static_best` is the exact split (pipeline/allocation.py, the same memory
   budget), then run and measured, once before and once after the dynamic run (the reference is the
   mean: the host's load drifts over minutes).
2. `dynamic`: starts even, reallocation on (threshold 0.15, min tokens 8, weight 0.3, KV transferred
   over the bus). After `--change-at` tokens one node's quota changes (`--change-node`, `--change-quota`);
   static even and best are measured again under the new quotas for the after-change goal.
3. `dynamic` with the KV recomputed instead of transferred (the move's pause, both ways).
`tokens_to_within_10pct`: tokens until the dynamic run's rate over a window of 8 tokens is within 10 %
of static best (the same after the change); `dynamic_tokens_per_s` is the rate from there until the
change (`dynamic_whole_first_half_tokens_per_s` includes the even start and the move). `identical_to_single`: every run's tokens equal the
single-process model's greedy tokens. The last line is the JSON result.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.report import print_result
from broker.client import BusClient
from broker.config import BusConfig
from broker.launcher import BrokerConfig, LocalBroker, free_port
from emulation.cpu_quota import limit_cpu
from emulation.pass_delay import write_quota
from models.catalog import BASE_MODEL_ID
from models.paths import REPO_ROOT, default_store_root
from models.store import ModelStore
from pipeline.allocation import Allocation, ModelShape, NodeCapability, optimal_split
from pipeline.coordinator import CoordinatorConfig, PipelineCoordinator, PipelineRequest, PipelineResult
from pipeline.reallocation import ReallocationConfig
from pipeline.shapes import shape_of_loaded

logger = logging.getLogger(__name__)

NODES = ("pi-01", "pi-02", "pi-03")
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
WINDOW = 8  # tokens over which a rate is compared to static best


class Speeds:
    """How the stages are slowed: cgroup CPU quotas, or the per-pass delay (emulation/pass_delay.py)."""

    def __init__(self, emulation: str, state: Path, scale: float) -> None:
        self.emulation, self.state = emulation, state
        self.scale = scale  # delay emulation: a quota q runs at q x scale of this core
        self.pids: dict[str, int] = {}

    def quota_file(self, node: str) -> Path:
        return self.state / f"quota-{node}"

    def set(self, node: str, quota: float) -> None:
        if self.emulation == "cgroup":
            limit_cpu(quota, f"pipeline-{node}", pid=self.pids[node])
        else:
            write_quota(self.quota_file(node), quota * self.scale)


def start_stages(port: int, secrets: Path, quotas: dict[str, float], speeds: Speeds, log_dir: Path) -> dict[str, subprocess.Popen]:
    processes = {}
    for node in NODES:
        command = [sys.executable, "-m", "pipeline", "--node", node, "--port", str(port), "--threads", "1",
                   "--password-file", str(secrets / "{node}.password")]
        if speeds.emulation == "cgroup":
            command += ["--cpu-quota", str(quotas[node])]
        else:
            write_quota(speeds.quota_file(node), quotas[node] * speeds.scale)
            command += ["--quota-file", str(speeds.quota_file(node))]
        log = open(log_dir / f"pipeline-{node}.log", "w")  # noqa: SIM115 - closed with the process
        processes[node] = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log,
                                           text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        speeds.pids[node] = processes[node].pid
    for node, process in processes.items():
        line = process.stdout.readline() if process.stdout else ""
        if "ready" not in line:
            raise RuntimeError(f"stage {node} did not start: {line!r}")
    return processes


def measured_capabilities(result: PipelineResult, memory_bytes: int, shape: ModelShape) -> tuple[tuple[NodeCapability, ...], float]:
    """Per node speed (layers/s of compute) over a run's single-token passes, and the head's cost in layers."""
    rows = [f for f in result.tracker.figures if f.count == 1]
    speeds, head_work = {}, shape.head_work
    for node in NODES:
        mine = [f for f in rows if f.node_id == node]
        speeds[node] = sum(f.layers for f in mine) / sum(f.compute_s for f in mine)
        head = [f.head_s for f in mine if f.head_s > 0]
        if head:
            head_work = sum(head) / len(head) * speeds[node]
    return tuple(NodeCapability(node, speeds[node], memory_bytes) for node in NODES), head_work


def windowed_rates(times: list[float]) -> list[float]:
    """Tokens/s over the WINDOW tokens ending at each token (index i covers tokens i - WINDOW + 1 .. i)."""
    return [WINDOW / (times[i] - times[i - WINDOW]) if times[i] > times[i - WINDOW] else 0.0
            for i in range(WINDOW, len(times))]


def tokens_to_within(times: list[float], target: float, start: int = 0) -> int | None:
    """Tokens after `start` until a window's rate is >= 0.9 x target (the window's last token counts)."""
    for index in range(max(start + WINDOW, WINDOW), len(times)):
        if WINDOW / max(1e-9, times[index] - times[index - WINDOW]) >= 0.9 * target:
            return index + 1 - start
    return None


def move_intervals(result: PipelineResult) -> list[float]:
    """Seconds from the held token to the first token after each move (pause + one token + any recompute)."""
    times, intervals = result.token_times_s, []
    for change in result.allocations:
        index = change.position - result.prompt_tokens  # the held token's index among generated tokens
        if change.reason == "imbalance" and 0 <= index < len(times) - 1:
            intervals.append(round(times[index + 1] - times[index], 3))
    return intervals


def median_interval(result: PipelineResult) -> float:
    gaps = sorted(b - a for a, b in zip(result.token_times_s, result.token_times_s[1:], strict=False))
    return round(gaps[len(gaps) // 2], 3) if gaps else 0.0


def rate(times: list[float], start: int = 0, end: int | None = None) -> float:
    end = len(times) if end is None else end
    return (end - 1 - start) / (times[end - 1] - times[start]) if end - 1 > start else 0.0


def run(coordinator: PipelineCoordinator, prompt_ids: list[int], tokens: int, allocation: Allocation | None,
        policy: ReallocationConfig, kv_mode: str = "transfer", capabilities: tuple[NodeCapability, ...] = ()) -> PipelineResult:
    request = PipelineRequest(BASE_MODEL_ID, NODES, tuple(prompt_ids), tokens,
                              allocation=None if allocation is None else allocation.layers,
                              capabilities=capabilities, reallocation=policy, kv_mode=kv_mode)  # type: ignore[arg-type]
    return coordinator.run(request)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--quotas", default="0.5,0.25,1.0", help="CPU quotas of the three stages, ring order")
    parser.add_argument("--memory-layers", type=int, default=24, help="layers one node's memory budget holds")
    parser.add_argument("--tokens", type=int, default=32, help="tokens of each static run")
    parser.add_argument("--dynamic-tokens", type=int, default=128)
    parser.add_argument("--change-at", type=int, default=64, help="dynamic run: token after which a quota changes")
    parser.add_argument("--change-node", default="pi-03")
    parser.add_argument("--change-quota", type=float, default=0.25)
    parser.add_argument("--emulation", choices=("delay", "cgroup"), default="delay",
                        help="slow stages by a per-pass delay (linear in work) or a cgroup CPU quota (bursty)")
    parser.add_argument("--scale", type=float, default=0.05,
                        help="delay emulation: quota q runs at q x scale of this core (absorbs host load up to 1 / scale)")
    parser.add_argument("--log-dir", default="/tmp/pipeline-bench", help="stage process logs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pipeline").setLevel(logging.INFO)
    torch.set_num_threads(1)
    quotas = dict(zip(NODES, (float(q) for q in args.quotas.split(",")), strict=True))
    after_quotas = {**quotas, args.change_node: args.change_quota}

    store = ModelStore(default_store_root())
    model = store.load(BASE_MODEL_ID)
    shape = shape_of_loaded(model)
    prompt_ids = model.encode_chat(PROMPT)
    reference = model.generate_greedy(prompt_ids, max(args.tokens, args.dynamic_tokens), stop_at_eos=False)
    memory_bytes = args.memory_layers * shape.layer_bytes
    budget = tuple(NodeCapability(node, 1000.0, memory_bytes) for node in NODES)
    off = ReallocationConfig(enabled=False)
    on = ReallocationConfig()
    with tempfile.TemporaryDirectory() as state:
        broker_config = BrokerConfig(port=free_port(), state_dir=f"{state}/broker", secrets_dir=f"{state}/secrets",
                                     edge_users=NODES, cloud_users=())
        with LocalBroker(broker_config):
            secrets = Path(f"{state}/secrets")
            bus_config = BusConfig(port=broker_config.port, password_file=str(secrets / "{node}.password"), keepalive_s=2)
            speeds = Speeds(args.emulation, Path(state), args.scale)
            log_dir = Path(args.log_dir)
            log_dir.mkdir(parents=True, exist_ok=True)
            processes = start_stages(broker_config.port, secrets, quotas, speeds, log_dir)
            try:
                with BusClient("center", bus_config.for_node("center")) as bus:
                    coordinator = PipelineCoordinator(bus, lambda model_id: shape, CoordinatorConfig(stall_timeout_s=60.0))
                    results = measure(args, coordinator, prompt_ids, shape, budget, memory_bytes, off, on, speeds,
                                      quotas, after_quotas)
            finally:
                for process in processes.values():
                    process.terminate()
                for process in processes.values():
                    try:
                        process.wait(15)
                    except subprocess.TimeoutExpired:
                        process.kill()
    runs: dict[str, PipelineResult] = results.pop("_runs")  # type: ignore[assignment]
    results["identical_to_single"] = all(r.token_ids == reference[: len(r.token_ids)] for r in runs.values())
    results["identical_by_run"] = {name: r.token_ids == reference[: len(r.token_ids)] for name, r in runs.items()}
    print_result(results, args.json)


def measure(args, coordinator, prompt_ids, shape, budget, memory_bytes, off, on, speeds, quotas, after_quotas) -> dict:
    progress = tqdm(total=7, desc="pipeline runs", unit="run", file=sys.stderr)

    def step(*run_args, **run_kwargs) -> PipelineResult:
        result = run(*run_args, **run_kwargs)
        progress.update()
        return result

    even = Allocation(NODES, (10, 10, 10))
    static_even = step(coordinator, prompt_ids, args.tokens, even, off, capabilities=budget)
    capabilities, head_work = measured_capabilities(static_even, memory_bytes, shape)
    full_shape = ModelShape(shape.num_layers, shape.layer_bytes, shape.activation_bytes, head_work)
    best = optimal_split(capabilities, full_shape)
    static_best = step(coordinator, prompt_ids, args.tokens, best, off, capabilities=budget)
    even_rate, best_rate = static_even.decode_tokens_per_s, static_best.decode_tokens_per_s

    change_position = len(prompt_ids) + args.change_at

    def change_quota(run_id: str, position: int, token_id: int, allocation: Allocation) -> None:
        if position == change_position:
            speeds.set(args.change_node, after_quotas[args.change_node])

    coordinator.on_token = change_quota
    try:
        dynamic = step(coordinator, prompt_ids, args.dynamic_tokens, even, on, capabilities=budget)
    finally:
        coordinator.on_token = None
    # the host's load drifts over minutes: static best is measured on both sides of the dynamic run
    # (first quotas: the changed node goes back for it), the reference is their mean
    speeds.set(args.change_node, quotas[args.change_node])
    static_best_again = step(coordinator, prompt_ids, args.tokens, best, off, capabilities=budget)
    speeds.set(args.change_node, after_quotas[args.change_node])
    best_rate = (best_rate + static_best_again.decode_tokens_per_s) / 2
    # the after-change figures: static even and best under the new quotas (they stay in force from here on)
    static_even_after = step(coordinator, prompt_ids, args.tokens, even, off, capabilities=budget)
    capabilities_after, head_after = measured_capabilities(static_even_after, memory_bytes, shape)
    best_after = optimal_split(capabilities_after, ModelShape(shape.num_layers, shape.layer_bytes, shape.activation_bytes, head_after))
    static_best_after = step(coordinator, prompt_ids, args.tokens, best_after, off, capabilities=budget)
    for node, quota in quotas.items():  # back to the first quotas for the recompute run
        speeds.set(node, quota)
    recompute = step(coordinator, prompt_ids, args.tokens, even, on, kv_mode="recompute", capabilities=budget)

    times = dynamic.token_times_s
    first_half = times[: args.change_at]
    converged = tokens_to_within(first_half, best_rate)
    best_after_rate = static_best_after.decode_tokens_per_s
    converged_after = tokens_to_within(times, best_after_rate, start=args.change_at)
    moves = [c for c in dynamic.allocations if c.reason == "imbalance"]
    recompute_moves = [c for c in recompute.allocations if c.reason == "imbalance"]
    # the rate dynamic reached: from its convergence (or from token 24 if it never got within 10 %) until
    # the quota change; the whole first half, even start and moves included, is reported next to it
    dynamic_rate = rate(first_half, start=min(len(first_half) - 2, converged or 24))
    return {
        "emulation": args.emulation, "scale": args.scale if args.emulation == "delay" else 1.0, "quotas": quotas, "quotas_after_change": after_quotas, "memory_layers": args.memory_layers,
        "static_even_tokens_per_s": round(even_rate, 2),
        "static_best_tokens_per_s": round(best_rate, 2),
        "static_best_runs_tokens_per_s": [round(static_best.decode_tokens_per_s, 2),
                                          round(static_best_again.decode_tokens_per_s, 2)],
        "static_best_allocation": list(best.layers),
        "dynamic_tokens_per_s": round(dynamic_rate, 2),
        "dynamic_whole_first_half_tokens_per_s": round(rate(first_half), 2),
        "tokens_to_within_10pct": converged,
        "static_even_after_change_tokens_per_s": round(static_even_after.decode_tokens_per_s, 2),
        "static_best_after_change_tokens_per_s": round(best_after_rate, 2),
        "static_best_after_change_allocation": list(best_after.layers),
        "dynamic_after_change_tokens_per_s": round(rate(times, start=args.change_at + (converged_after or 0)), 2),
        "dynamic_whole_after_change_tokens_per_s": round(rate(times, start=args.change_at), 2),
        "tokens_to_within_10pct_after_change": converged_after,
        "dynamic_allocations": [[c.position - len(prompt_ids), list(c.layers), round(c.imbalance, 3)] for c in dynamic.allocations],
        "move_pause_transfer_s": [round(c.pause_s, 3) for c in moves],
        "move_kv_bytes": [c.kv_bytes for c in moves],
        "move_pause_recompute_s": [round(c.pause_s, 3) for c in recompute_moves],
        "move_token_interval_transfer_s": move_intervals(dynamic),
        "move_token_interval_recompute_s": move_intervals(recompute),
        "median_token_interval_dynamic_s": median_interval(dynamic),
        "median_token_interval_recompute_run_s": median_interval(recompute),
        "dynamic_vs_best": round(dynamic_rate / best_rate, 3) if best_rate else None,
        "dynamic_vs_even": round(dynamic_rate / even_rate, 3) if even_rate else None,
        "per_node_static_even": static_even.tracker.summary(),
        "per_node_static_best": static_best.tracker.summary(),
        "per_node_dynamic": dynamic.tracker.summary(),
        "_runs": {"static_even": static_even, "static_best": static_best, "dynamic": dynamic,
                  "static_best_again": static_best_again,
                  "static_even_after": static_even_after, "static_best_after": static_best_after, "recompute": recompute},
    }


if __name__ == "__main__":
    main()
