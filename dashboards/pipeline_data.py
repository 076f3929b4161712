"""The Pipeline page's data: runs, the split over time, per node per token compute vs communication (no Streamlit),
and a sample run shaped like benchmarks.pipeline's for the sample fleet."""

from __future__ import annotations

import logging

import pandas as pd

from broker.messages.metrics import MetricPoint
from metrics import schema

logger = logging.getLogger(__name__)

COST_KINDS = ("compute_ms", "head_ms", "communication_ms", "queue_ms")


def runs(stages: pd.DataFrame) -> pd.DataFrame:
    """One row per run, newest first: run, start, nodes, tokens (single-token passes of its first node)."""
    if stages.empty:
        return pd.DataFrame(columns=["run", "start", "nodes", "tokens"])
    grouped = stages.groupby("run")
    table = pd.DataFrame({
        "start": grouped["time"].min(),
        "nodes": grouped["node"].nunique(),
        "tokens": grouped["position"].nunique(),
    }).reset_index()
    return table.sort_values("start", ascending=False, kind="stable").reset_index(drop=True)


def allocation_spans(allocations: pd.DataFrame, run: str, last_position: int) -> pd.DataFrame:
    """Each node's layer range [start, end) from the token it came into force until the next change."""
    mine = allocations[allocations["run"] == run].sort_values(["position", "node"], kind="stable")
    if mine.empty:
        return pd.DataFrame(columns=["node", "from_token", "to_token", "start", "end", "layers", "reason"])
    changes = sorted(mine["position"].unique())
    following = {position: (changes[index + 1] if index + 1 < len(changes) else max(last_position, position + 1))
                 for index, position in enumerate(changes)}
    spans = mine.assign(from_token=mine["position"].clip(lower=0),
                        to_token=mine["position"].map(following))
    return spans[["node", "from_token", "to_token", "start", "end", "layers", "reason"]].reset_index(drop=True)


def per_token_costs(stages: pd.DataFrame, run: str) -> pd.DataFrame:
    """Single-token passes of a run: node, position, and each cost kind in ms (long format: kind, ms)."""
    mine = stages[(stages["run"] == run)]
    if "layers" in mine:
        mine = mine[mine["position"] > mine["position"].min()]  # the prompt pass is not a token
    columns = [kind for kind in COST_KINDS if kind in mine]
    return mine.melt(id_vars=["node", "position"], value_vars=columns, var_name="kind", value_name="ms")


def node_means(costs: pd.DataFrame) -> pd.DataFrame:
    """Mean ms per token of each cost kind per node."""
    if costs.empty:
        return pd.DataFrame(columns=["node", "kind", "ms"])
    return costs.groupby(["node", "kind"], as_index=False)["ms"].mean()


def sample_run(now_ns: int, run: str = "pl-sample") -> list[MetricPoint]:
    """A 48-token run over pi-01/pi-02/pi-03 at 0.5/0.25/1.0 of a core: even, moved to 5/1/24 after 8 tokens."""
    speeds = {"pi-01": 0.5, "pi-02": 0.25, "pi-03": 1.0}  # layers per ms
    splits = [(-40, (10, 10, 10), "start", 0.0), (8, (5, 1, 24), "imbalance", 0.24)]
    start_ns = now_ns - 200 * 1_000_000_000
    points: list[MetricPoint] = []
    for index, (position, layers, reason, share) in enumerate(splits):
        ranges, first = {}, 0
        for node, count in zip(speeds, layers, strict=True):
            ranges[node] = (first, first + count)
            first += count
        points += schema.pipeline_allocation_points(run, position, ranges, reason, share, timestamp_ns=start_ns + index)
    stamp = start_ns
    for token in range(-1, 48):
        layers = splits[1][1] if token >= 8 else splits[0][1]
        for node, count in zip(speeds, layers, strict=True):
            stamp += 1
            head_ms = 8.0 / speeds[node] if node == "pi-03" else 0.0
            points.append(schema.pipeline_stage_point(
                run, node, 40 + token, count, count / speeds[node], head_ms, 0.6 + 0.05 * (token % 5),
                1.2 + 0.1 * (token % 3), 0.2, epoch=1 if token < 8 else 2, timestamp_ns=stamp))
    return points
