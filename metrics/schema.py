"""The fleet's metric schema: one builder per measurement, pure functions of plain values.

Any node can call these and publish the points on `metrics/{node}`, and the center can hand them
straight to the recorder. Measurement, tag and field names live here and nowhere else; the
dashboard's queries import them. `docs/metrics.md` describes every measurement.

Arguments may be passed by position in the order listed; the timestamp is always by keyword.

Tags are the values a dashboard groups or filters by (node, model, task type, session); everything
measured is a field. InfluxDB keeps one point per (measurement, tag set, timestamp): two points of
one series at the same nanosecond overwrite each other, so builders that emit several points for one
event (rounds, caching decisions, a response's tokens) give each a distinct tag set or timestamp.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from broker.messages.metrics import MetricPoint

logger = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"
ROUND = "round"
CACHING = "caching"
TASK = "task"
TOKEN = "token"
MODEL_EVENT = "model_event"
MODEL_PROFILE = "model_profile"
PIPELINE_STAGE = "pipeline_stage"
PIPELINE_ALLOCATION = "pipeline_allocation"
MEASUREMENTS = (HEARTBEAT, ROUND, CACHING, TASK, TOKEN, MODEL_EVENT, MODEL_PROFILE, PIPELINE_STAGE, PIPELINE_ALLOCATION)

ALL_TASK_TYPES = "all"  # task_type tag of a round's summary point
SOURCES = ("edge", "cloud")  # who decided a token
MODEL_EVENTS = ("load", "unload")

FieldValue = float | int | str | bool


def now_ns() -> int:
    """Wall-clock timestamp for a point (InfluxDB orders points by wall time, not a monotonic clock)."""
    return time.time_ns()


def _float(value: float | None) -> float | None:
    """Optional float fields as floats: InfluxDB refuses a field once written as an int, then as a float."""
    return None if value is None else float(value)


def _point(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue | None], timestamp_ns: int) -> MetricPoint:
    """A point without empty tags and without fields whose value is unknown (None)."""
    clean_tags = {key: str(value) for key, value in tags.items() if value is not None and str(value) != ""}
    clean_fields = {key: value for key, value in fields.items() if value is not None}
    return MetricPoint(measurement, clean_tags, clean_fields, timestamp_ns)


# A cloud worker's heartbeat counters kept as heartbeat fields: speculative drafts it verified and
# accepted, and per collaboration mode its tokens, compute CPU ms and layer passes (cloud_node/cost.py).
CLOUD_COST_MODES = ("cloud_only", "collaborative", "speculative", "naive_split")
CLOUD_COUNTERS = ("drafts_verified", "drafts_accepted", *(
    f"cost_{mode}_{figure}" for mode in CLOUD_COST_MODES for figure in ("tokens", "cpu_ms", "layer_passes")))


# An edge's collaborative agreement budgets (edge_node/collab/agreement_budget.py BudgetBook.counters)
EDGE_BUDGET_COUNTERS = ("budget_tokens", "budget_expected_disagreements", "budget_shift")


def counter_fields(counters: Mapping[str, float]) -> dict[str, float]:
    """The cloud and edge-budget counters present in a heartbeat's counters, as float fields."""
    return {name: float(counters[name]) for name in (*CLOUD_COUNTERS, *EDGE_BUDGET_COUNTERS) if name in counters}


def heartbeat_point(
    node: str,
    role: str,
    cpu_percent: float,
    memory_percent: float,
    load_1m: float,
    queue_depth: int,
    loaded_models: Sequence[str] = (),
    metrics_dropped: int | None = None,
    rejected_inputs: int | None = None,
    counters: Mapping[str, float] | None = None,
    *,
    timestamp_ns: int,
) -> MetricPoint:
    """A node's vital signs at one heartbeat. `loaded_models` is stored as a count and a sorted id list;
    `rejected_inputs` counts malformed or refused inputs since the node started (messages and HTTP requests);
    `counters`: a cloud worker's cumulative cost and draft counters, an edge's agreement budget (`counter_fields`)."""
    return _point(
        HEARTBEAT,
        {"node": node, "role": role},
        {
            **counter_fields(counters or {}),
            "cpu_percent": float(cpu_percent),
            "memory_percent": float(memory_percent),
            "load_1m": float(load_1m),
            "queue_depth": int(queue_depth),
            "loaded_models": len(loaded_models),
            "loaded_model_ids": ",".join(sorted(loaded_models)),
            "metrics_dropped": None if metrics_dropped is None else int(metrics_dropped),
            "rejected_inputs": None if rejected_inputs is None else int(rejected_inputs),
        },
        timestamp_ns,
    )


@dataclass(frozen=True, slots=True)
class TaskTypeStats:
    """What one round did for one task type (or for all of them)."""

    tasks: int  # tasks scheduled
    edge: int  # tasks that ran on an edge
    cloud: int  # tasks that ran on the cloud
    failed: int = 0  # tasks with no answer (timeout, error)
    latency_ms_mean: float | None = None  # mean end-to-end task latency
    latency_ms_p95: float | None = None
    quality: float | None = None  # mean task score in [0, 1]; None if nothing was scored


def round_points(
    round_id: int,
    per_type: Mapping[str, TaskTypeStats],
    duration_s: float,
    caching_round: bool = False,
    *,
    timestamp_ns: int,
    quality_keep: float | None = None,
) -> list[MetricPoint]:
    """One point per task type plus a summary point tagged task_type="all" (weighted by task count).

    `quality_keep` (the center's quality-against-latency setting) rides on the summary point.
    """
    points = [_round_point(round_id, task_type, stats, duration_s, caching_round, timestamp_ns) for task_type, stats in per_type.items()]
    summary = summarize(per_type.values())
    overall = _round_point(round_id, ALL_TASK_TYPES, summary, duration_s, caching_round, timestamp_ns)
    if quality_keep is not None:
        overall = MetricPoint(overall.measurement, overall.tags, {**overall.fields, "quality_keep": float(quality_keep)},
                              overall.timestamp_ns)
    points.append(overall)
    return points


def summarize(stats: Iterable[TaskTypeStats]) -> TaskTypeStats:
    """All task types together: counts add up, latency and quality are means weighted by task count.

    The p95 of the union cannot be recovered from per-type p95s; the worst per-type p95 bounds it.
    """
    stats = list(stats)
    tasks = sum(s.tasks for s in stats)

    def weighted(values: list[tuple[float | None, int]]) -> float | None:
        known = [(value, weight) for value, weight in values if value is not None and weight > 0]
        total = sum(weight for _, weight in known)
        return sum(value * weight for value, weight in known) / total if total else None

    p95s = [s.latency_ms_p95 for s in stats if s.latency_ms_p95 is not None]
    return TaskTypeStats(
        tasks=tasks,
        edge=sum(s.edge for s in stats),
        cloud=sum(s.cloud for s in stats),
        failed=sum(s.failed for s in stats),
        latency_ms_mean=weighted([(s.latency_ms_mean, s.tasks - s.failed) for s in stats]),
        latency_ms_p95=max(p95s) if p95s else None,
        quality=weighted([(s.quality, s.tasks - s.failed) for s in stats]),
    )


def _round_point(
    round_id: int, task_type: str, stats: TaskTypeStats, duration_s: float, caching_round: bool, timestamp_ns: int
) -> MetricPoint:
    return _point(
        ROUND,
        {"task_type": task_type},
        {
            "round_id": int(round_id),
            "tasks": int(stats.tasks),
            "tasks_edge": int(stats.edge),
            "tasks_cloud": int(stats.cloud),
            "tasks_failed": int(stats.failed),
            "latency_ms_mean": _float(stats.latency_ms_mean),
            "latency_ms_p95": _float(stats.latency_ms_p95),
            "quality": _float(stats.quality),
            "duration_s": float(duration_s),
            "caching_round": bool(caching_round),
        },
        timestamp_ns,
    )


def caching_point(
    round_id: int,
    edge: str,
    model: str,
    placed: bool,
    changed: bool,
    status: str,
    deploy_s: float | None = None,
    *,
    timestamp_ns: int,
) -> MetricPoint:
    """One cell of a caching round's model × edge placement.

    `placed`: the model is in the new placement; `changed`: it differs from the previous placement
    (a deployment or an eviction); `status`: kept, deploying, ready, failed, evicted.
    """
    return _point(
        CACHING,
        {"edge": edge, "model": model},
        {"round_id": int(round_id), "placed": bool(placed), "changed": bool(changed), "status": status, "deploy_s": _float(deploy_s)},
        timestamp_ns,
    )


def task_point(
    node: str,
    model: str,
    task_type: str,
    status: str,
    round_id: int,
    task_id: str,
    latency_ms: float,
    queue_ms: float | None = None,
    first_token_ms: float | None = None,
    tokens: int = 0,
    quality: float | None = None,
    predicted_ms: float | None = None,
    measured_ms: float | None = None,
    *,
    timestamp_ns: int,
) -> MetricPoint:
    """One finished (or failed) task; tokens/s is derived from tokens and latency.

    `predicted_ms` is the scheduler's dispatch-to-result latency at dispatch, `measured_ms` what it took.
    """
    tokens_per_s = tokens / (latency_ms / 1000.0) if latency_ms > 0 and tokens > 0 else None
    return _point(
        TASK,
        {"node": node, "model": model, "task_type": task_type, "status": status},
        {
            "round_id": int(round_id),
            "task_id": task_id,
            "latency_ms": float(latency_ms),
            "queue_ms": _float(queue_ms),
            "first_token_ms": _float(first_token_ms),
            "tokens": int(tokens),
            "tokens_per_s": _float(tokens_per_s),
            "quality": _float(quality),
            "predicted_ms": _float(predicted_ms),
            "measured_ms": _float(measured_ms),
        },
        timestamp_ns,
    )


def token_point(
    node: str,
    session: str,
    source: str,
    position: int,
    exit_layer: int,
    latency_ms: float,
    bytes_up: int = 0,
    bytes_down: int = 0,
    decided_by: str = "",
    *,
    timestamp_ns: int,
) -> MetricPoint:
    """One generated token: decided at the edge (`exit_layer` = the exit it left at) or by the cloud.

    `decided_by` refines the source (exit, head, cloud, fallback, draft_accepted, draft_corrected).
    Raises ValueError for a source other than edge/cloud.
    """
    if source not in SOURCES:
        raise ValueError(f"token source must be one of {SOURCES}, got {source!r}")
    return _point(
        TOKEN,
        {"node": node, "session": session, "source": source},
        {
            "position": int(position),
            "exit_layer": int(exit_layer),
            "latency_ms": float(latency_ms),
            "bytes_up": int(bytes_up),
            "bytes_down": int(bytes_down),
            "decided_by": str(decided_by),
        },
        timestamp_ns,
    )


@dataclass(frozen=True, slots=True)
class TokenTiming:
    """One token of a response, as the edge measured it."""

    source: str  # "edge" or "cloud"
    position: int  # index in the response
    exit_layer: int  # layer whose exit head emitted it; for cloud tokens the model's last layer
    latency_ms: float  # from the previous token to this one
    bytes_up: int = 0  # hidden states or draft ids sent to the cloud for it
    bytes_down: int = 0  # reply bytes from the cloud
    decided_by: str = ""  # exit, head, cloud, fallback, draft_accepted, draft_corrected


def token_points(node: str, session: str, tokens: Sequence[TokenTiming], *, start_ns: int) -> list[MetricPoint]:
    """All tokens of one response, timestamped `start_ns` plus the cumulative latency.

    Each step is at least 1 ns so no two tokens of a session share a timestamp (they would
    overwrite each other in InfluxDB). Raises ValueError like token_point.
    """
    points = []
    timestamp_ns = start_ns
    for token in tokens:
        timestamp_ns += max(1, int(token.latency_ms * 1e6))
        points.append(
            token_point(
                node, session, token.source, position=token.position, exit_layer=token.exit_layer,
                latency_ms=token.latency_ms, bytes_up=token.bytes_up, bytes_down=token.bytes_down,
                decided_by=token.decided_by, timestamp_ns=timestamp_ns,
            )
        )
    return points


def model_event_point(
    node: str, model: str, event: str, model_bytes: int, load_s: float | None = None, *, timestamp_ns: int
) -> MetricPoint:
    """A model loaded into or unloaded from a node's memory. Raises ValueError for an unknown event."""
    if event not in MODEL_EVENTS:
        raise ValueError(f"model event must be one of {MODEL_EVENTS}, got {event!r}")
    return _point(MODEL_EVENT, {"node": node, "model": model, "event": event}, {"bytes": int(model_bytes), "load_s": _float(load_s)}, timestamp_ns)


def model_profile_point(
    model: str,
    model_bytes: int,
    perplexity: float | None = None,
    load_s: float | None = None,
    token_ms: float | None = None,
    node: str = "",
    *,
    timestamp_ns: int,
) -> MetricPoint:
    """A model variant's measured profile: size, perplexity, load time, time per token (on `node`)."""
    return _point(
        MODEL_PROFILE,
        {"model": model, "node": node},
        {"bytes": int(model_bytes), "perplexity": _float(perplexity), "load_s": _float(load_s), "token_ms": _float(token_ms)},
        timestamp_ns,
    )


def pipeline_stage_point(
    run: str, node: str, position: int, layers: int, compute_ms: float, head_ms: float, send_ms: float,
    receive_ms: float, queue_ms: float, epoch: int = 0, *, timestamp_ns: int,
) -> MetricPoint:
    """One pipeline stage's share of one token (issue 18): compute vs communication, per node per token."""
    return _point(
        PIPELINE_STAGE,
        {"run": run, "node": node},
        {
            "position": int(position), "layers": int(layers), "epoch": int(epoch),
            "compute_ms": float(compute_ms), "head_ms": float(head_ms), "send_ms": float(send_ms),
            "receive_ms": float(receive_ms), "queue_ms": float(queue_ms),
            "communication_ms": float(send_ms) + float(receive_ms),
        },
        timestamp_ns,
    )


def pipeline_allocation_points(run: str, position: int, layers_by_node: Mapping[str, tuple[int, int]], reason: str,
                               imbalance: float = 0.0, *, timestamp_ns: int) -> list[MetricPoint]:
    """A split that came into force at `position`: one point per node with its layer range [start, end)."""
    return [
        _point(PIPELINE_ALLOCATION, {"run": run, "node": node},
               {"position": int(position), "start": int(start), "end": int(end), "layers": int(end - start),
                "reason": str(reason), "imbalance": float(imbalance)}, timestamp_ns)
        for node, (start, end) in layers_by_node.items()
    ]
