"""Benchmark job: a matrix of routing cells over the held-out tasks, on the real broker, cloud and edges.

    .venv/bin/python -m benchmarks.job benchmarks/jobs/sample.toml [--selftest-kill] [--json]

Cells (router x mining mode x edge variant x collaboration mode x link profile, benchmarks/job_spec.py)
run one after another on a fleet started for each link profile (benchmarks/job_fleet.py); each cell's
task records and summary are appended to the results file as it finishes (benchmarks/job_results.py).
Started again, the job runs only the cells without a line. `--selftest-kill` measures that on itself:
it starts the job, SIGKILLs it (and its fleet) once the first cell is written, starts it again, and
counts cells written twice and cells missing. The leaderboard (CSV + Markdown) is written from the
results file. Last line: JSON with `operating_point`, `oracle`, `selftest` (with --selftest-kill), `cells`.

Goals: operating_point.quality_ratio >= 0.95 with cloud_query_ratio <= 0.5; the miner's quality ratio
above random's (same cloud share, same tasks) by at least ci95_halfwidth; no cell duplicated or missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from benchmarks.job_cells import CellContext, run_cell, summarise
from benchmarks.job_fleet import JobFleet, kill_recorded
from benchmarks.job_report import cell_rows, operating_point, oracle_point, scores_of, write_leaderboard
from benchmarks.job_results import append_cell, first_by_key, read_results
from benchmarks.job_spec import Cell, JobSpec, load_job
from benchmarks.report import print_result
from fleet_center.workload import Task, load_tasks
from routing.splits import split_tasks, take_per_type
from runtime.settings import REPO_ROOT

logger = logging.getLogger(__name__)


def heldout_tasks(spec: JobSpec) -> list[Task]:
    """The held-out part (never seen by the miner), `heldout_per_type` of each type."""
    tasks = load_tasks()
    split = split_tasks([(t.task_id, t.task_type) for t in tasks])
    types = {t.task_id: t.task_type for t in tasks}
    chosen = split.heldout if not spec.heldout_per_type else take_per_type(split.heldout, types, spec.heldout_per_type)
    by_id = {t.task_id: t for t in tasks}
    return [by_id[task_id] for task_id in chosen]


def context_for(cell: Cell, spec: JobSpec, lines: dict[str, dict]) -> CellContext:
    edge = lines.get(Cell("edge_only", "mining_then_inference", *cell.group).key)
    cloud = lines.get(Cell("cloud_only", "mining_then_inference", *cell.group).key)
    miner = lines.get(Cell("miner", "mining_then_inference", *cell.group).key)
    probability = miner["summary"]["cloud_query_ratio"] if miner else spec.random_cloud_probability
    return CellContext(scores_of(edge) if edge else None, scores_of(cloud) if cloud else None, probability,
                       exact_share=miner is not None)


def run_job(spec: JobSpec, results: Path, workdir: Path) -> int:
    """Run every cell without a line in `results`; returns how many ran."""
    tasks = heldout_tasks(spec)
    done = first_by_key(read_results(results))
    task_ids = sorted(t.task_id for t in tasks)
    stale = [key for key, line in done.items() if sorted(int(r["task_id"]) for r in line["records"]) != task_ids]
    if stale:  # a changed task set (heldout_per_type) must not reuse cells run over other tasks
        raise ValueError(f"{results} holds {len(stale)} cell(s) over other tasks than this job's {len(tasks)} "
                         f"(first: {stale[0]}); move the file aside or pass --results")
    todo = [cell for cell in spec.cells() if cell.key not in done]
    ran = 0
    progress = tqdm(total=len(todo), desc="cells", unit="cell", file=sys.stderr)
    for link in dict.fromkeys(cell.link for cell in todo):
        fleet = JobFleet(workdir / f"fleet-{link}", spec.edges, link, spec.edge_cpu_quota)
        try:
            fleet.start()
            _warm_up(fleet, spec, tasks[0], {cell.edge_variant for cell in todo if cell.link == link})
            for cell in [c for c in todo if c.link == link]:
                started = time.time()
                logger.warning("cell %s: %d tasks", cell.key, len(tasks))
                context = context_for(cell, spec, first_by_key(read_results(results)))
                records = run_cell(cell, spec, tasks, fleet.edge_urls, context)
                append_cell(results, {"key": cell.key, "cell": dataclasses.asdict(cell),
                                      "started_at": started, "wall_s": round(time.time() - started, 1),
                                      "random_cloud_probability": context.random_cloud_probability,
                                      "summary": summarise(records), "records": records})
                ran += 1
                progress.update()
        finally:
            fleet.stop()
    return ran


def _warm_up(fleet: JobFleet, spec: JobSpec, task: Task, variants: set[str]) -> None:
    """Load the edge models and the cloud model before any cell is timed."""
    import httpx

    from benchmarks.job_cells import request_body

    for url in fleet.edge_urls:
        for variant in sorted(variants):
            for route in ("edge", "cloud"):
                cell = Cell("warm_up", "mining_then_inference", variant, "standalone", fleet.link_profile)
                body = {**request_body(task, cell, spec, route), "max_new_tokens": 2}
                httpx.post(f"{url}/perform_task", json=body, timeout=spec.task_timeout_s).raise_for_status()


def selftest_kill(job_path: Path, results: Path, workdir: Path, timeout_s: float) -> dict[str, int]:
    """Start the job, SIGKILL it once one cell is written, start it again; count duplicated and missing cells."""
    if results.exists():
        results.rename(results.with_suffix(f".{int(time.time())}.bak"))
    command = [sys.executable, "-m", "benchmarks.job", str(job_path), "--results", str(results),
               "--workdir", str(workdir), "--no-report"]
    log = open(workdir / "job-run-1.log", "wb")  # noqa: SIM115 - the child writes to it
    first = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while len(read_results(results)) < 1:
        if first.poll() is not None:
            raise RuntimeError(f"the job exited (code {first.returncode}) before writing a cell; see {log.name}")
        if time.monotonic() > deadline:
            raise TimeoutError("no cell written before the self-test's timeout")
        time.sleep(1.0)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = sum(kill_recorded(workdir / f"fleet-{link}") for link in load_job(job_path).links)
    cells_before = len(read_results(results))
    logger.warning("self-test: killed the job after %d cell(s) (and %d fleet processes); starting it again",
                   cells_before, killed)
    with open(workdir / "job-run-2.log", "wb") as log2:
        second = subprocess.run(command, cwd=REPO_ROOT, stdout=log2, stderr=subprocess.STDOUT, timeout=timeout_s)
    if second.returncode != 0:
        raise RuntimeError(f"the restarted job failed (code {second.returncode}); see {workdir / 'job-run-2.log'}")
    keys = [line["key"] for line in read_results(results)]
    expected = {cell.key for cell in load_job(job_path).cells()}
    return {"cells_before_kill": cells_before, "resumed_cells_duplicated": len(keys) - len(set(keys)),
            "cells_missing": len(expected - set(keys))}


def report(spec: JobSpec, results: Path, command: str) -> dict[str, object]:
    lines = first_by_key(read_results(results))
    rows = cell_rows(spec.cells(), lines)
    write_leaderboard(rows, spec.resolve(spec.leaderboard_csv), spec.resolve(spec.leaderboard_md), spec.name, command)
    point = operating_point(spec, lines)
    oracle = oracle_point(spec, lines)
    result: dict[str, object] = {"job": spec.name, "operating_point": point, "oracle": oracle, "cells": len(rows),
                                 "tasks": rows[0]["tasks"] if rows else 0, "results": str(results),
                                 "leaderboard": {r["key"]: {k: r[k] for k in ("quality_ratio", "cloud_query_ratio",
                                                                               "latency_s_p50", "ttft_s_p50")}
                                                 for r in rows}}
    escalating = operating_point(spec, lines, "inference_then_mining")
    if escalating:  # reported beside the goals, which are the mining-then-inference miner's
        result["inference_then_mining"] = escalating
    if point:
        result["goals"] = {
            "quality_ratio_0_95_at_cloud_0_5": point["quality_ratio"] >= 0.95 and point["cloud_query_ratio"] <= 0.5,
            # "exceeds": a miner that sends nothing to the cloud ties random at p = 0 and does not count
            "miner_beats_random_by_ci95": "ci95_halfwidth" in point
            and point["quality_ratio"] - point["random_quality_ratio"] > 0
            and point["quality_ratio"] - point["random_quality_ratio"] >= point["ci95_halfwidth"],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path, help="job file (TOML), e.g. benchmarks/jobs/sample.toml")
    parser.add_argument("--results", type=Path, help="results file (default: the job's)")
    parser.add_argument("--workdir", type=Path, help="fleet logs and state (default: next to the results)")
    parser.add_argument("--selftest-kill", action="store_true", help="kill the job after one cell, resume, count")
    parser.add_argument("--selftest-timeout-s", type=float, default=3600.0)
    parser.add_argument("--no-report", action="store_true", help="run cells only (the self-test's children)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    spec = load_job(args.job)
    results = args.results or spec.resolve(spec.results)
    workdir = args.workdir or results.parent / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    selftest = None
    if args.selftest_kill:
        selftest = selftest_kill(args.job, results, workdir, args.selftest_timeout_s)
    else:
        run_job(spec, results, workdir)
    if args.no_report:
        return
    command = f"python -m benchmarks.job {args.job}" + (" --selftest-kill" if args.selftest_kill else "")
    result = report(spec, results, command)
    if selftest is not None:
        result["selftest"] = selftest
        result.setdefault("goals", {})["selftest_no_duplicate_no_missing"] = (  # type: ignore[union-attr]
            selftest["resumed_cells_duplicated"] == 0 and selftest["cells_missing"] == 0)
    print_result(result, args.json)


if __name__ == "__main__":
    main()
