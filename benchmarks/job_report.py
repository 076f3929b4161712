"""The job's report: ratios against cloud-only, the miner's operating point against random at the same
cloud share (paired bootstrap over tasks), the oracle, and the leaderboard (CSV + Markdown)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.job_spec import Cell, JobSpec
from fleet_center.workload import TASK_TYPE_NAMES
from routing.leaderboard import Entry, pareto_front, rank
from routing.operating_point import quality_ratio, random_expectation
from routing.stats import paired_bootstrap

logger = logging.getLogger(__name__)

LEADERBOARD_COLUMNS = ("rank", "router", "mining_mode", "edge_variant", "collaboration", "link", "quality",
                       "quality_ratio", "cloud_query_ratio", "cloud_token_share", "ttft_s_p50", "latency_s_p50",
                       "latency_s_p95", "tokens_per_s", "bytes_per_response", "pareto",
                       *(f"quality_{name}" for name in TASK_TYPE_NAMES), "tasks")


def scores_of(line: Mapping) -> dict[int, float]:
    return {int(r["task_id"]): float(r["score"]) for r in line["records"]}


def cell_rows(cells: Sequence[Cell], lines: Mapping[str, Mapping]) -> list[dict[str, object]]:
    """One leaderboard row per finished cell, with its quality ratio against its group's cloud-only cell."""
    rows = []
    for cell in cells:
        line = lines.get(cell.key)
        cloud = lines.get(Cell("cloud_only", "mining_then_inference", *cell.group).key)
        if line is None or cloud is None:
            continue
        summary = line["summary"]
        cloud_scores, scores = scores_of(cloud), scores_of(line)
        common = sorted(set(cloud_scores) & set(scores))
        ratio = quality_ratio(sum(scores[t] for t in common) / len(common),
                              sum(cloud_scores[t] for t in common) / len(common))
        rows.append({"router": cell.router, "mining_mode": cell.mining_mode, "edge_variant": cell.edge_variant,
                     "collaboration": cell.collaboration, "link": cell.link, "key": cell.key,
                     "quality": summary["quality"], "quality_ratio": round(ratio, 4),
                     **{name: summary[name] for name in ("cloud_query_ratio", "cloud_token_share", "ttft_s_p50",
                                                         "latency_s_p50", "latency_s_p95", "tokens_per_s",
                                                         "bytes_per_response")},
                     **{f"quality_{name}": summary["quality_by_type"].get(name, "") for name in TASK_TYPE_NAMES},
                     "tasks": summary["tasks"]})
    front = pareto_front([Entry(r["key"], r["quality_ratio"], r["cloud_query_ratio"]) for r in rows])  # type: ignore[arg-type]
    order = {e.name: i + 1 for i, e in enumerate(rank([Entry(r["key"], r["quality_ratio"], r["cloud_query_ratio"])  # type: ignore[arg-type]
                                                       for r in rows]))}
    for row in rows:
        row["pareto"] = row["key"] in front
        row["rank"] = order[str(row["key"])]
    return sorted(rows, key=lambda r: r["rank"])  # type: ignore[arg-type, return-value]


def operating_point(spec: JobSpec, lines: Mapping[str, Mapping],
                    mining_mode: str = "mining_then_inference") -> dict[str, object]:
    """The learned miner (in `mining_mode`) of the first group against random at its cloud share.

    Random routing at share p is compared by its expectation over its own coin, per task
    (1 - p) x edge-only's score + p x cloud-only's (exact: answers are greedy, and the random cell's
    scores equal those cells' task by task): one draw adds the coin's variance to the paired
    interval. The drawn random cell (a mining-then-inference cell, drawn at that miner's share) is
    reported next to it (`random_draw_*`) for mining-then-inference.
    """
    group = spec.cells()[0].group
    miner = lines.get(Cell("miner", mining_mode, *group).key)
    random = lines.get(Cell("random", "mining_then_inference", *group).key) if mining_mode == "mining_then_inference" else None
    edge = lines.get(Cell("edge_only", "mining_then_inference", *group).key)
    cloud = lines.get(Cell("cloud_only", "mining_then_inference", *group).key)
    if miner is None or cloud is None:
        return {}
    cloud_scores, miner_scores = scores_of(cloud), scores_of(miner)
    tasks = sorted(cloud_scores)
    cloud_mean = sum(cloud_scores.values()) / len(tasks)
    share = miner["summary"]["cloud_query_ratio"]
    point: dict[str, object] = {
        "router": "miner", "mining_mode": mining_mode, "edge_variant": group[0],
        "quality_ratio": round(quality_ratio(sum(miner_scores[t] for t in tasks) / len(tasks), cloud_mean), 4),
        "cloud_query_ratio": share,
    }

    def against(scores: Mapping[int, float], cloud_share: float) -> dict[str, float]:
        quality, difference, halfwidth = paired_against(miner_scores, scores, tasks, cloud_mean, spec)
        return {"quality_ratio": quality, "miner_minus_random": difference, "ci95_halfwidth": halfwidth,
                "cloud_query_ratio": cloud_share}

    draw = against(scores_of(random), random["summary"]["cloud_query_ratio"]) if random is not None else None
    expected = None
    if edge is not None:
        edge_scores = scores_of(edge)
        expectation = random_expectation(np.array([edge_scores[t] for t in tasks]),
                                         np.array([cloud_scores[t] for t in tasks]), share)
        expected = against(dict(zip(tasks, expectation.tolist(), strict=True)), share)
    reference = expected or draw
    if reference is not None:
        point.update({"random_quality_ratio": reference["quality_ratio"],
                      "random_cloud_query_ratio": reference["cloud_query_ratio"],
                      "miner_minus_random": reference["miner_minus_random"],
                      "ci95_halfwidth": reference["ci95_halfwidth"],
                      "random_estimate": "expected over random's draws" if expected else "one draw"})
    if expected is not None and draw is not None:
        point.update({f"random_draw_{key}": value for key, value in draw.items()})
    return point


def paired_against(miner_scores: Mapping[int, float], other: Mapping[int, float], tasks: Sequence[int],
                   cloud_mean: float, spec: JobSpec) -> tuple[float, float, float]:
    """(other's quality ratio, miner minus other, 95 % half-width), paired over `tasks`, in cloud-only units."""
    difference, halfwidth = paired_bootstrap([miner_scores[t] / cloud_mean for t in tasks],
                                             [other[t] / cloud_mean for t in tasks],
                                             resamples=spec.bootstrap_resamples, seed=spec.random_seed)
    mean = sum(other[t] for t in tasks) / len(tasks)
    return round(quality_ratio(mean, cloud_mean), 4), round(difference, 4), round(halfwidth, 4)


def oracle_point(spec: JobSpec, lines: Mapping[str, Mapping]) -> dict[str, object]:
    group = spec.cells()[0].group
    oracle = lines.get(Cell("oracle", "mining_then_inference", *group).key)
    rows = {r["key"]: r for r in cell_rows(spec.cells(), lines)}
    if oracle is None or oracle["key"] not in rows:
        return {}
    return {"quality_ratio": rows[oracle["key"]]["quality_ratio"],
            "cloud_query_ratio": oracle["summary"]["cloud_query_ratio"]}


def write_leaderboard(rows: Sequence[Mapping[str, object]], csv_path: Path, md_path: Path, title: str,
                      command: str) -> None:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as output:
        writer = csv.DictWriter(output, LEADERBOARD_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    header = ("rank", "router", "mining mode", "edge", "collab", "link", "quality", "quality ratio",
              "cloud queries", "cloud tokens", "TTFT p50 s", "latency p50 s", "p95 s", "tok/s", "bytes/resp", "Pareto")
    keys = LEADERBOARD_COLUMNS[:16]
    lines = [f"# Leaderboard: {title}", "",
             f"Written by `{command}` (benchmarks/job.py); quality is the center's per-task score "
             "(fleet_center/evaluation.py) on held-out tasks only; quality ratio is against the cloud-only cell "
             "on the same tasks. Pareto: no other cell has at least its quality ratio with at most its cloud share.",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join("**yes**" if k == "pareto" and row[k] else ("" if k == "pareto" else str(row[k]))
                                       for k in keys) + " |")
    lines += ["", "Quality per task type:", "", "| rank | router | mining mode | " + " | ".join(TASK_TYPE_NAMES) + " |",
              "|" + "---|" * (3 + len(TASK_TYPE_NAMES))]
    for row in rows:
        lines.append(f"| {row['rank']} | {row['router']} | {row['mining_mode']} | "
                     + " | ".join(str(row[f"quality_{name}"]) for name in TASK_TYPE_NAMES) + " |")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(lines) + "\n")
