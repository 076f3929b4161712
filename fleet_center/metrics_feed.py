"""Turns what the center sees (heartbeats, rounds, results, deployments, profiles) into metric points."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from broker.messages import Heartbeat, ModelStatus, TaskResult
from broker.messages.membership import rejected_inputs
from fleet_center.center_db import CenterDb
from fleet_center.cost_model import ModelProfile
from fleet_center.recorder import MetricRecorder
from fleet_center.round_plan import task_type_name
from metrics import schema
from runtime.resources import CpuMeter, take_snapshot

logger = logging.getLogger(__name__)

class MetricsFeed:
    """Every method is cheap and never raises into its caller: metrics must not break the fleet."""

    def __init__(self, recorder: MetricRecorder, db: CenterDb, role_of: Callable[[str], str],
                 center_rejected: Callable[[], int] = lambda: 0) -> None:
        """`center_rejected` counts the inputs the center itself refused (shown in its own heartbeat row)."""
        self.recorder = recorder
        self.db = db
        self.role_of = role_of
        self.center_rejected = center_rejected
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._center_heartbeats, name="center-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _record(self, points: list) -> None:
        try:
            self.recorder.record(points)
        except Exception:
            logger.exception("metric points dropped")

    def heartbeat(self, beat: Heartbeat) -> None:
        self._record([schema.heartbeat_point(
            beat.node_id, self.role_of(beat.node_id), beat.cpu_percent, beat.memory_percent, beat.load_avg_1m,
            beat.queue_depth, tuple(m.model_id for m in beat.loaded_models),
            rejected_inputs=rejected_inputs(beat.counters), counters=beat.counters, timestamp_ns=schema.now_ns())])

    def _center_heartbeats(self) -> None:
        cpu_meter = CpuMeter()
        while not self._stop.wait(5.0):
            sample = take_snapshot(cpu_meter)
            self._record([schema.heartbeat_point(
                "center", "center", sample.cpu_percent, sample.memory_percent, sample.load_avg_1m, 0,
                metrics_dropped=self.recorder.stats().dropped, rejected_inputs=self.center_rejected(),
                timestamp_ns=schema.now_ns())])

    def result(self, result: TaskResult, quality: float | None, clouds: set[str], predicted_s: float | None = None,
               measured_s: float | None = None) -> None:
        now = schema.now_ns()
        latency_s = result.queue_wait_s + result.load_time_s + result.total_s
        points = [schema.task_point(
            result.node_id, result.model_id or "-", result.task_type or "-", result.status, result.round_id,
            result.task_id, latency_s * 1e3, queue_ms=result.queue_wait_s * 1e3,
            first_token_ms=result.ttft_s * 1e3 if result.tokens else None, tokens=len(result.tokens), quality=quality,
            predicted_ms=None if predicted_s is None else predicted_s * 1e3,
            measured_ms=None if measured_s is None else measured_s * 1e3, timestamp_ns=now)]
        if result.tokens:
            start_ns = now - int(sum(t.latency_ms for t in result.tokens) * 1e6)
            timings = [schema.TokenTiming(
                source="cloud" if result.node_id in clouds else t.source, position=i,
                exit_layer=t.layer, latency_ms=t.latency_ms,
                bytes_up=t.bytes_up, bytes_down=t.bytes_down, decided_by=t.decided_by) for i, t in enumerate(result.tokens)]
            points += schema.token_points(result.node_id, result.task_id, timings, start_ns=start_ns)
        self._record(points)

    def round_done(self, round_index: int, summary: dict) -> None:
        if summary.get("kind") == "caching":
            self._caching(round_index, summary)
            return
        clouds = set(summary.get("clouds", ()))
        per_type: dict[str, schema.TaskTypeStats] = {}
        rows = self.db.results_of(round_index)
        for task_type in sorted({row[2] for row in rows}):
            mine = [r for r in rows if r[2] == task_type]
            ok = [r for r in mine if r[5] == "ok"]
            latencies = [r[8] * 1e3 for r in ok]
            qualities = [r[7] for r in ok if r[7] is not None]
            per_type[task_type_name(task_type)] = schema.TaskTypeStats(
                tasks=len(mine), edge=sum(1 for r in ok if r[3] not in clouds), cloud=sum(1 for r in ok if r[3] in clouds),
                failed=len(mine) - len(ok),
                latency_ms_mean=float(np.mean(latencies)) if latencies else None,
                latency_ms_p95=float(np.percentile(latencies, 95)) if latencies else None,
                quality=float(np.mean(qualities)) if qualities else None)
        if per_type:
            self._record(schema.round_points(round_index, per_type, float(summary.get("duration_s", 0.0)),
                                             timestamp_ns=schema.now_ns(), quality_keep=summary.get("quality_keep")))

    def _caching(self, round_index: int, summary: dict) -> None:
        now = schema.now_ns()
        placement = {edge: set(models) for edge, models in summary.get("placement", {}).items()}
        previous = {edge: set(models) for edge, models in summary.get("previous", {}).items()}
        failed = set(summary.get("failed", ()))
        points = []
        for edge in sorted(set(placement) | set(previous)):
            before, after = previous.get(edge, set()), placement.get(edge, set())
            for model in sorted(before | after):
                placed = model in after
                changed = placed != (model in before)
                status = ("failed" if f"{edge}:{model}" in failed else "ready" if changed and placed
                          else "evicted" if changed else "kept")
                points.append(schema.caching_point(round_index, edge, model, placed, changed, status,
                                                   deploy_s=summary.get("deploy_s"), timestamp_ns=now))
        # the round itself too (no tasks), so the Rounds page shows it in its timeline and table
        points += schema.round_points(round_index, {}, float(summary.get("duration_s", 0.0)), caching_round=True,
                                      timestamp_ns=now)
        self._record(points)

    def model_status(self, status: ModelStatus, model_bytes: int) -> None:
        if status.state in ("ready", "unloaded"):
            event = "load" if status.state == "ready" else "unload"
            self._record([schema.model_event_point(status.node_id, status.model_id, event, model_bytes=model_bytes,
                                                   timestamp_ns=schema.now_ns())])

    def profiles(self, profiles: tuple[ModelProfile, ...], perplexity: dict[str, float]) -> None:
        now = schema.now_ns()
        self._record([schema.model_profile_point(
            p.model_id, p.size_bytes, perplexity=perplexity.get(p.model_id), load_s=p.load_time_s,
            token_ms=p.token_time_s * 1e3, node="center", timestamp_ns=now + i) for i, p in enumerate(profiles)])
