"""Running one cell of a benchmark job: every held-out query through a real edge, scored per task type.

The job decides routes it can decide as a client (edge_only, cloud_only, random, oracle, resource) and
sends them as `"route": "edge"` / `"cloud"`; the miner runs on the edge itself (`"route": "auto"`), in the
cell's mining mode. Every query goes to an edge's `POST /perform_task` (one worker thread per edge);
the edge answers it or forwards it to the cloud worker over the broker.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from benchmarks.job_spec import Cell, JobSpec
from fleet_center.evaluation import prediction_from_answer, score_task
from fleet_center.round_plan import task_type_name
from fleet_center.workload import TASK_TYPE_NAMES, Task
from routing.routers import EdgeState, Router, RoutingQuery, make_router, uniform_draw

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellContext:
    """What a cell needs from cells before it: hindsight scores (oracle) and the miner's cloud share (random)."""

    edge_scores: Mapping[int, float] | None = None
    cloud_scores: Mapping[int, float] | None = None
    random_cloud_probability: float = 0.5
    exact_share: bool = False  # True: the random router sends exactly round(p x tasks) queries to the cloud


def exact_share_probability(task_ids: Sequence[int], share: float, seed: int) -> float:
    """A p for which exactly round(share x len(task_ids)) of these queries draw below it: random routing at
    the miner's measured cloud share, not just around it (the draws are still independent of the queries)."""
    draws = sorted(uniform_draw(str(task_id), seed) for task_id in task_ids)
    count = round(share * len(draws))
    if count <= 0:
        return 0.0
    if count >= len(draws):
        return 1.0
    return (draws[count - 1] + draws[count]) / 2


def client_router(cell: Cell, spec: JobSpec, context: CellContext, tasks: Sequence[Task] = ()) -> Router | None:
    """The router the job applies itself, or None for the miner (it runs on the edge). Raises ValueError."""
    if cell.router == "miner":
        return None
    probability = context.random_cloud_probability
    if cell.router == "random" and context.exact_share and tasks:
        probability = exact_share_probability([t.task_id for t in tasks], probability, spec.random_seed)
    oracle = None
    if cell.router == "oracle":
        if context.edge_scores is None or context.cloud_scores is None:
            raise ValueError("the oracle cell needs the edge_only and cloud_only cells first")
        oracle = {str(t): (context.edge_scores[t], context.cloud_scores[t]) for t in context.edge_scores}
    return make_router(cell.router, cloud_probability=probability, seed=spec.random_seed,
                       oracle_scores=oracle)


def request_body(task: Task, cell: Cell, spec: JobSpec, route: str) -> dict[str, object]:
    return {"task_id": f"{cell.router}-{cell.mining_mode[:3]}-{task.task_id}-{time.time_ns() % 10**9}",
            "task_type": task_type_name(task.task_type), "prompt": task.task_token, "model_name": cell.edge_variant,
            "max_new_tokens": spec.max_new_tokens, "mode": cell.collaboration, "route": route,
            "mining_mode": cell.mining_mode, "cloud_model_id": spec.cloud_model, "wait": True,
            "wait_timeout_s": spec.task_timeout_s}


def task_record(task: Task, result: Mapping[str, object]) -> dict[str, object]:
    """One answered query as the results file keeps it. Raises RuntimeError for a failed query."""
    if result.get("status") != "ok":
        raise RuntimeError(f"task {task.task_id}: {result.get('status')}: {result.get('error')}")
    tokens = list(result.get("tokens") or [])  # type: ignore[call-overload]
    prediction = prediction_from_answer(task.task_type, result.get("parsed") or {}, str(result.get("answer", "")))  # type: ignore[arg-type]
    total_s = float(result["total_s"]) + float(result["queue_wait_s"])  # type: ignore[arg-type]
    return {
        "task_id": task.task_id, "task_type": task.task_type, "route": result.get("route") or "edge",
        "score": score_task(task, prediction).quality, "ttft_s": float(result["ttft_s"]),  # type: ignore[arg-type]
        "latency_s": total_s, "generate_s": float(result["total_s"]), "tokens": len(tokens),  # type: ignore[arg-type]
        "cloud_tokens": sum(1 for t in tokens if t["decided_by"] in ("cloud", "draft_corrected")),
        "bytes": sum(int(t["bytes_up"]) + int(t["bytes_down"]) for t in tokens),
        "route_reason": result.get("route_reason", ""),
    }


def run_cell(cell: Cell, spec: JobSpec, tasks: Sequence[Task], edge_urls: Sequence[str],
             context: CellContext) -> list[dict[str, object]]:
    """Every task of the cell through the fleet, in task order in the records. Raises RuntimeError on a failure."""
    router = client_router(cell, spec, context, tasks)
    work: queue.Queue[tuple[int, Task]] = queue.Queue()
    for index, task in enumerate(tasks):
        work.put((index, task))
    records: list[dict[str, object] | None] = [None] * len(tasks)
    failures: list[str] = []

    def worker(url: str) -> None:
        with httpx.Client(timeout=spec.task_timeout_s + 30) as client:
            while not failures:
                try:
                    index, task = work.get_nowait()
                except queue.Empty:
                    return
                route = "auto"
                if router is not None:
                    state = _edge_state(client, url) if router.name == "resource" else None
                    route = router.route(RoutingQuery(str(task.task_id), task.task_type, edge_state=state)).route
                try:
                    response = client.post(f"{url}/perform_task", json=request_body(task, cell, spec, route))
                    response.raise_for_status()
                    records[index] = task_record(task, response.json())
                except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as error:
                    failures.append(f"{cell.key}: task {task.task_id} on {url}: {error}")

    threads = [threading.Thread(target=worker, args=(url,), daemon=True) for url in edge_urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(failures[0])
    return [record for record in records if record is not None]


def _edge_state(client: httpx.Client, url: str) -> EdgeState:
    figures = client.get(f"{url}/health", timeout=10).json()
    return EdgeState(queue_depth=int(figures.get("queue_depth", 0)))


def summarise(records: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """A cell's figures from its task records (ratios against other cells come later)."""
    scores = [float(r["score"]) for r in records]  # type: ignore[arg-type]
    latencies = sorted(float(r["latency_s"]) for r in records)  # type: ignore[arg-type]
    tokens = sum(int(r["tokens"]) for r in records)  # type: ignore[call-overload]
    by_type: dict[str, float] = {}
    for type_index, name in enumerate(TASK_TYPE_NAMES):
        values = [float(r["score"]) for r in records if r["task_type"] == type_index]  # type: ignore[arg-type]
        if values:
            by_type[name] = round(statistics.fmean(values), 4)
    return {
        "tasks": len(records), "quality": round(statistics.fmean(scores), 4), "quality_by_type": by_type,
        "cloud_query_ratio": round(sum(r["route"] in ("cloud", "escalated") for r in records) / len(records), 4),
        "escalated": sum(r["route"] == "escalated" for r in records),
        "cloud_token_share": round(sum(int(r["cloud_tokens"]) for r in records) / max(1, tokens), 4),  # type: ignore[call-overload]
        "ttft_s_p50": round(statistics.median(float(r["ttft_s"]) for r in records), 3),  # type: ignore[arg-type]
        "latency_s_p50": round(statistics.median(latencies), 3),
        "latency_s_p95": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
        "tokens_per_s": round(tokens / max(1e-9, sum(float(r["generate_s"]) for r in records)), 2),  # type: ignore[arg-type]
        "bytes_per_response": round(sum(int(r["bytes"]) for r in records) / len(records), 1),  # type: ignore[call-overload]
    }
