"""A small synthetic fleet's metric points, for demos and the dashboard's tests.

Three edges (pi-03 stopped two minutes ago), one cloud worker, 24 rounds of the five task types,
two caching rounds, six collaborative sessions and the catalog's model profiles, all built with
the recorder's schema builders and grouped by the node that would publish them. Deterministic
for a given `now_ns` and seed.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict

from broker.messages.metrics import MetricPoint
from dashboards.pipeline_data import sample_run
from metrics import schema
from metrics.store import MetricStore

logger = logging.getLogger(__name__)

EDGES = ("pi-01", "pi-02", "pi-03")
CLOUD = "cloud-1"
CENTER = "center"
TASK_TYPES = ("TC", "NER", "QA", "TS", "SG")
# (model id, bytes, perplexity, load_s, token_ms): shaped like the catalog's SmolLM2 variants.
MODELS = (
    ("smollm2-135m", 538_000_000, 11.8, 2.9, 61.0),
    ("smollm2-135m-bf16", 269_000_000, 11.9, 1.7, 48.0),
    ("smollm2-135m-int8", 150_000_000, 12.6, 1.1, 39.0),
    ("smollm2-135m-edge20", 382_000_000, 15.3, 2.0, 41.0),
    ("smollm2-135m-edge15", 305_000_000, 19.7, 1.6, 32.0),
)
OFFLINE_EDGE = "pi-03"
ROUND_INTERVAL_S = 20
ROUNDS = 24
SECOND_NS = 1_000_000_000


def sample_fleet(now_ns: int, seed: int = 7) -> dict[str, list[MetricPoint]]:
    """Points by publishing node (edges and cloud: heartbeats, tasks, tokens, model events; center: the rest)."""
    rng = random.Random(seed)
    points: dict[str, list[MetricPoint]] = defaultdict(list)
    start_ns = now_ns - ROUNDS * ROUND_INTERVAL_S * SECOND_NS
    _heartbeats(points, rng, start_ns, now_ns)
    _rounds_and_tasks(points, rng, start_ns)
    _caching(points, start_ns)
    _tokens(points, rng, now_ns)
    points[CENTER].extend(sample_run(now_ns))  # a pipeline run (the center records it)
    for model, size, perplexity, load_s, token_ms in MODELS:
        points[CENTER].append(schema.model_profile_point(
            model, model_bytes=size, perplexity=perplexity, load_s=load_s, token_ms=token_ms, node="pi-01",
            timestamp_ns=start_ns - 3600 * SECOND_NS,
        ))
    return dict(points)


def placement(round_id: int) -> dict[str, set[str]]:
    """Models on each edge after caching round `round_id` (0 and 21)."""
    if round_id < 21:
        return {"pi-01": {"smollm2-135m-int8", "smollm2-135m-edge15"}, "pi-02": {"smollm2-135m-edge20"},
                "pi-03": {"smollm2-135m-int8"}}
    return {"pi-01": {"smollm2-135m-int8", "smollm2-135m-edge20"}, "pi-02": {"smollm2-135m-edge20"},
            "pi-03": {"smollm2-135m-edge15"}}


def _heartbeats(points: dict[str, list[MetricPoint]], rng: random.Random, start_ns: int, now_ns: int) -> None:
    for index, node in enumerate((*EDGES, CLOUD)):
        last_ns = now_ns - 120 * SECOND_NS if node == OFFLINE_EDGE else now_ns - 2 * SECOND_NS
        role = "cloud" if node == CLOUD else "edge"
        cpu, memory, queue = 20.0 + 15 * index, 35.0 + 10 * index, 2
        for timestamp_ns in range(start_ns, last_ns + 1, 5 * SECOND_NS):
            # Random walks: vital signs drift rather than jump between heartbeats.
            cpu = min(98.0, max(3.0, cpu + rng.uniform(-6, 6)))
            memory = min(95.0, max(10.0, memory + rng.uniform(-1, 1)))
            queue = max(0, min(8, queue + rng.choice((-1, 0, 0, 1))))
            models = sorted(placement(0 if timestamp_ns < start_ns + 21 * ROUND_INTERVAL_S * SECOND_NS else 21).get(node, set()))
            elapsed_s = (timestamp_ns - start_ns) / SECOND_NS
            points[node].append(schema.heartbeat_point(
                node, role, cpu_percent=cpu, memory_percent=memory, load_1m=cpu / 25,
                queue_depth=queue, loaded_models=models, timestamp_ns=timestamp_ns,
                counters=_cloud_counters(elapsed_s) if node == CLOUD else _budget_counters(index, elapsed_s),
            ))


def _budget_counters(index: int, elapsed_s: float) -> dict[str, float]:
    """An edge's collaborative agreement budget after `elapsed_s`: near its 0.91 target, as in benchmarks.collab."""
    tokens = (1.0 + index) * elapsed_s
    return {"budget_tokens": tokens, "budget_expected_disagreements": (0.088 + 0.002 * index) * tokens,
            "budget_shift": -0.1 - 0.05 * index}


def _cloud_counters(elapsed_s: float) -> dict[str, float]:
    """Cumulative cost counters of a cloud worker after `elapsed_s` (shaped like a benchmarks.collab run)."""
    drafts = 3.0 * elapsed_s
    return {"drafts_verified": drafts, "drafts_accepted": 0.8 * drafts,
            "cost_cloud_only_tokens": 4.0 * elapsed_s, "cost_cloud_only_cpu_ms": 4.0 * elapsed_s * 60.0,
            "cost_cloud_only_layer_passes": 4.0 * elapsed_s * 30,
            "cost_speculative_tokens": 2.9 * elapsed_s, "cost_speculative_cpu_ms": 2.9 * elapsed_s * 22.0,
            "cost_speculative_layer_passes": 2.9 * elapsed_s * 4.5}


def _rounds_and_tasks(points: dict[str, list[MetricPoint]], rng: random.Random, start_ns: int) -> None:
    for round_id in range(ROUNDS):
        end_ns = start_ns + (round_id + 1) * ROUND_INTERVAL_S * SECOND_NS
        per_type: dict[str, schema.TaskTypeStats] = {}
        for type_index, task_type in enumerate(TASK_TYPES):
            tasks = rng.randint(3, 8)
            cloud = rng.randint(0, tasks // 2 + (1 if task_type in ("TS", "SG") else 0))
            failed = 1 if rng.random() < 0.1 else 0
            latencies = []
            for task_index in range(tasks):
                where = CLOUD if task_index < cloud else EDGES[(task_index + type_index) % 2]
                latency_ms = rng.uniform(300, 900) * (1.8 if where == CLOUD else 1.0) * (1 + type_index / 4)
                latencies.append(latency_ms)
                status = "failed" if task_index == tasks - 1 and failed else "ok"
                tokens = rng.randint(4, 60)
                points[where].append(schema.task_point(
                    where, "smollm2-135m" if where == CLOUD else "smollm2-135m-int8", task_type, status,
                    round_id=round_id, task_id=f"r{round_id}-{task_type}-{task_index}", latency_ms=latency_ms,
                    tokens=tokens, quality=None if status == "failed" else rng.uniform(0.4, 0.95),
                    predicted_ms=latency_ms * rng.uniform(0.7, 1.3), measured_ms=latency_ms,
                    timestamp_ns=end_ns - rng.randint(1, 5 * SECOND_NS),
                ))
            latencies.sort()
            per_type[task_type] = schema.TaskTypeStats(
                tasks=tasks, edge=tasks - cloud - failed, cloud=cloud, failed=failed,
                latency_ms_mean=sum(latencies) / len(latencies), latency_ms_p95=latencies[int(0.95 * (len(latencies) - 1))],
                quality=0.5 + 0.08 * type_index + rng.uniform(-0.05, 0.05) + round_id * 0.004,
            )
        points[CENTER].extend(schema.round_points(
            round_id, per_type, duration_s=ROUND_INTERVAL_S * rng.uniform(0.5, 0.9),
            caching_round=round_id in (0, 21), timestamp_ns=end_ns, quality_keep=0.9,
        ))


def _caching(points: dict[str, list[MetricPoint]], start_ns: int) -> None:
    models = [model for model, *_ in MODELS if model != "smollm2-135m"]
    for round_id, previous_round in ((0, None), (21, 0)):
        timestamp_ns = start_ns + round_id * ROUND_INTERVAL_S * SECOND_NS + 5 * SECOND_NS
        now_placed = placement(round_id)
        before = placement(previous_round) if previous_round is not None else {}
        for edge in EDGES:
            for model in models:
                placed = model in now_placed[edge]
                was = model in before.get(edge, set())
                if not placed and not was:
                    continue
                changed = placed != was
                deploy_failed = edge == OFFLINE_EDGE and round_id == 21
                status = "kept" if not changed else ("evicted" if not placed else ("failed" if deploy_failed else "ready"))
                deploy_s = None if not changed or not placed else 4.0 + len(model) / 5
                points[CENTER].append(schema.caching_point(
                    round_id, edge, model, placed=placed, changed=changed, status=status, deploy_s=deploy_s,
                    timestamp_ns=timestamp_ns,
                ))
                if changed and placed and not deploy_failed:
                    size = next(size for name, size, *_ in MODELS if name == model)
                    points[edge].append(schema.model_event_point(
                        edge, model, "load", model_bytes=size, load_s=deploy_s, timestamp_ns=timestamp_ns + SECOND_NS,
                    ))
                elif changed:
                    size = next(size for name, size, *_ in MODELS if name == model)
                    points[edge].append(schema.model_event_point(edge, model, "unload", model_bytes=size, timestamp_ns=timestamp_ns))


def _tokens(points: dict[str, list[MetricPoint]], rng: random.Random, now_ns: int) -> None:
    for index in range(6):
        edge = EDGES[index % 2]
        session = f"s-{edge}-{index:03d}"
        timings = []
        for position in range(rng.randint(24, 48)):
            exit_layer = rng.choice((6, 10, 15, 15, 20, 20, 30))
            to_cloud = exit_layer == 30
            timings.append(schema.TokenTiming(
                source="cloud" if to_cloud else "edge", position=position, exit_layer=exit_layer,
                latency_ms=rng.uniform(80, 160) if to_cloud else rng.uniform(18, 30) + exit_layer,
                bytes_up=1152, bytes_down=24 if to_cloud else 0,
            ))
        start_ns = now_ns - (300 - 45 * index) * SECOND_NS
        points[edge].extend(schema.token_points(edge, session, timings, start_ns=start_ns))


def write_sample(store: MetricStore, now_ns: int, seed: int = 7) -> int:
    """Write the sample fleet into `store`; returns the number of points. Raises StoreError."""
    points = [point for node_points in sample_fleet(now_ns, seed).values() for point in node_points]
    store.write(points)
    return len(points)
