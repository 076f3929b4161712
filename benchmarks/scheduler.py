"""Scheduler benchmark: fast solvers against MILP optima, and fast solver wall time at fleet sizes.

    .venv/bin/python -m benchmarks.scheduler --json

Seeded random instances (fleet_center.scheduling.random_instances). The last stdout line is one
JSON object; with --json nothing else goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable

from fleet_center.scheduling import ExactScheduler, FastConfig, FastScheduler, SolverError
from fleet_center.scheduling.random_instances import random_caching, random_offloading

logger = logging.getLogger(__name__)

MILP_TIME_LIMIT_S = 30.0
# (edges, tasks) of the gap instances, cycled over seeds; the largest is the 20 x 200 ceiling.
GAP_SIZES = ((5, 50), (10, 100), (15, 150), (20, 200))
NUM_MODELS = 10


def _timed_ms(run: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = run()
    return result, (time.perf_counter() - start) * 1000.0


def _gap_pct(fast: float, optimum: float) -> float:
    return 100.0 * (fast - optimum) / optimum if optimum > 0 else 0.0


def offloading_gaps(
    num_instances: int, say: Callable[[str], None]
) -> tuple[list[float], list[float], list[float]]:
    """Per instance the MILP solved: gap (%) of the fast plan, of the fast plan with candidate
    pruning forced on (the path real sizes take), and the MILP wall time (ms)."""
    exact, fast = ExactScheduler(MILP_TIME_LIMIT_S), FastScheduler()
    pruned = FastScheduler(offloading=FastConfig(max_arcs=0))
    gaps, pruned_gaps, milp_ms = [], [], []
    for seed in range(num_instances):
        num_edges, num_tasks = GAP_SIZES[seed % len(GAP_SIZES)]
        problem = random_offloading(num_edges, num_tasks, NUM_MODELS, seed)
        try:
            optimum, elapsed_ms = _timed_ms(lambda p=problem: exact.offload(p))
        except SolverError as error:
            say(f"offloading seed {seed}: MILP unsolved ({error})")
            continue
        plan = fast.offload(problem)
        gaps.append(_gap_pct(plan.total_latency_s, optimum.total_latency_s))
        pruned_gaps.append(_gap_pct(pruned.offload(problem).total_latency_s, optimum.total_latency_s))
        milp_ms.append(elapsed_ms)
        say(
            f"offloading {num_edges}x{num_tasks} seed {seed}: gap {gaps[-1]:.4f}% "
            f"(pruned {pruned_gaps[-1]:.4f}%) milp {elapsed_ms:.0f} ms"
        )
    return gaps, pruned_gaps, milp_ms


def caching_gaps(num_instances: int, say: Callable[[str], None]) -> list[float]:
    """Gap (%) of the fast caching plan against the caching MILP, per instance the MILP solved."""
    exact, fast = ExactScheduler(MILP_TIME_LIMIT_S), FastScheduler()
    gaps = []
    for seed in range(num_instances):
        num_edges, tasks_per_round = GAP_SIZES[seed % len(GAP_SIZES)]
        problem = random_caching(num_edges, tasks_per_round, NUM_MODELS, 1000 + seed)
        try:
            optimum = exact.cache(problem)
        except SolverError as error:
            say(f"caching seed {seed}: MILP unsolved ({error})")
            continue
        gaps.append(_gap_pct(fast.cache(problem).objective_s, optimum.objective_s))
        say(f"caching {num_edges}x{tasks_per_round} seed {seed}: gap {gaps[-1]:.4f}%")
    return gaps


def fast_offloading_ms(num_edges: int, num_tasks: int, repeats: int) -> float:
    """Median wall time of the fast offloading solver on one seeded instance, ms."""
    problem = random_offloading(num_edges, num_tasks, NUM_MODELS, seed=7)
    fast = FastScheduler()
    return statistics.median(_timed_ms(lambda: fast.offload(problem))[1] for _ in range(repeats))


def pruned_gap_at_scale(num_edges: int, num_tasks: int) -> float:
    """Gap (%) of the pruned fast solver against the unpruned one, which is exact (see offloading_fast)."""
    problem = random_offloading(num_edges, num_tasks, NUM_MODELS, seed=7)
    exact = FastScheduler(offloading=FastConfig(max_arcs=10**9)).offload(problem)
    pruned = FastScheduler(offloading=FastConfig(max_arcs=0)).offload(problem)
    return _gap_pct(pruned.total_latency_s, exact.total_latency_s)


def fast_caching_ms(num_edges: int, tasks_per_round: int) -> float:
    problem = random_caching(num_edges, tasks_per_round, NUM_MODELS, seed=7)
    return _timed_ms(lambda: FastScheduler().cache(problem))[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    parser.add_argument("--instances", type=int, default=24, help="gap instances per decision (>= 20)")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    started = time.perf_counter()
    gaps, pruned_gaps, milp_ms = offloading_gaps(args.instances, say)
    caching = caching_gaps(args.instances, say)
    result = {
        "gap_pct_max": round(max(gaps), 4),
        "gap_instances": len(gaps),
        "pruned_gap_pct_max": round(max(pruned_gaps), 4),
        "pruned_gap_pct_100x1000": round(pruned_gap_at_scale(100, 1000), 4),
        "fast_ms_100x1000": round(fast_offloading_ms(100, 1000, repeats=5), 1),
        "fast_ms_1000x10000": round(fast_offloading_ms(1000, 10000, repeats=3), 1),
        "milp_ms_median": round(statistics.median(milp_ms), 1),
        "caching_gap_pct_max": round(max(caching), 4),
        "caching_gap_instances": len(caching),
        "caching_fast_ms_100x1000": round(fast_caching_ms(100, 1000), 1),
        "caching_fast_ms_1000x10000": round(fast_caching_ms(1000, 10000), 1),
        "models": NUM_MODELS,
        "total_s": 0.0,
    }
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return 0 if len(gaps) >= 20 else 1


if __name__ == "__main__":
    sys.exit(main())
