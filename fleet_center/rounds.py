"""The center's round loop: offloading rounds (generate → schedule → dispatch → collect → evaluate → record)
and model-caching rounds (demand → choose models per edge → deploy → wait until ready)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from broker import topics
from broker.client import BusClient, Envelope
from broker.messages import Heartbeat, ModelStatus, NodeCommand, TaskDispatch, TaskResult, TaskSpec
from fleet_center import workload
from fleet_center.center_db import CenterDb, StoredTask
from fleet_center.config import RoundsConfig
from fleet_center.cost_model import CostInputs, ModelProfile, NodeFigures, build_fleet
from fleet_center.estimates import Estimate, Exploration, observe
from fleet_center.evaluation import prediction_from_answer, score_task
from fleet_center.latency_prediction import cloud_queue_latencies, planned_tokens
from fleet_center.membership import FleetMembership
from fleet_center.round_plan import (
    Outstanding,
    is_caching_round,
    overdue,
    prediction_error_pct,
    reassignment_target,
    task_type_name,
)
from fleet_center.round_routing import RoundRouting, route_tasks
from fleet_center.scheduling import problem as sched
from fleet_center.scheduling.solvers import make_scheduler
from routing.routers import EdgeState
from runtime.capabilities import SpeedProbe

logger = logging.getLogger(__name__)

RoundListener = Callable[[int, dict], None]
PARK_S = 2.0  # a task with no node to run it is looked at again after this long


@dataclass
class RoundContext:
    round_index: int
    tasks: dict[str, StoredTask]
    by_id: dict[int, workload.Task]


class RoundRunner:
    """Drives the fleet round by round; resumes from the database after a restart."""

    def __init__(self, config: RoundsConfig, bus: BusClient, membership: FleetMembership, db: CenterDb,
                 profiles: tuple[ModelProfile, ...], reference_gflops: float,
                 task_set: tuple[workload.Task, ...] | None = None,
                 deploy_command: Callable[[str, str, bool], NodeCommand] | None = None,
                 reference_probe: SpeedProbe | None = None, routing: RoundRouting | None = None) -> None:
        """`deploy_command(model_id, command_id, pin)` builds a deploy command whose URL serves the model;
        without it, deploy commands carry no URL and edges use the copy in their own store.
        `reference_probe`, if given, re-measures the reference GFLOPS (this host) as rounds go by: a
        probe taken while the fleet starts up reads low, like the edges' own.
        `routing`, if active, replaces the offloading scheduler with query routing (fleet_center/round_routing.py)."""
        self.config = config
        self.routing = routing or RoundRouting()
        self._routes: dict[str, str] = {}  # instance id -> TaskSpec.route of routed rounds
        # the service resolves an empty initial_model from profiles; alone, edges start on the cloud's model
        self.initial_model = config.initial_model or config.models[0]
        self.bus = bus
        self.membership = membership
        self.db = db
        self.profiles = profiles
        self.reference_gflops = reference_gflops
        self.reference_probe = reference_probe
        self.task_set = task_set or workload.load_tasks(config.tasks_file or workload.DEFAULT_TASKS_PATH)
        self.tasks_by_id = {task.task_id: task for task in self.task_set}
        self.scheduler = make_scheduler(config.scheduler)
        self.workload = workload.WorkloadConfig(arrival=config.arrival, tasks_per_edge=config.tasks_per_edge)
        self.listeners: list[RoundListener] = []
        # (result, quality, cloud ids, predicted latency s, measured dispatch-to-result s)
        self.result_listeners: list[Callable[[TaskResult, float | None, set[str], float | None, float | None], None]] = []
        self.status_listeners: list[Callable[[ModelStatus], None]] = []
        self.deploy_command = deploy_command or (
            lambda model_id, command_id, pin: NodeCommand(command_id=command_id, kind="deploy_model",
                                                          model_id=model_id, pin=pin))
        self._results: queue.SimpleQueue[TaskResult] = queue.SimpleQueue()
        self._statuses: queue.SimpleQueue[ModelStatus] = queue.SimpleQueue()
        self._token_estimates: dict[tuple[str, str], Estimate] = {}  # (node, model) decode seconds per token
        self._first_token_estimates: dict[tuple[str, str], Estimate] = {}  # (node, model) seconds to the first token
        self._last_result_at: dict[str, float] = {}  # node id -> wall clock of its latest result
        self._cloud_overhead_s = 0.3  # learned from cloud results (messages, model lookup, parsing)
        self.exploration = Exploration(bonus=config.exploration_bonus, half_life_s=config.estimate_half_life_s)
        self._cloud_turn = 0
        self.placement: dict[str, set[str]] = db.latest_placement()

    def attach(self) -> None:
        """Subscribe to results and deployment status (before the bus connects or after)."""
        self.bus.subscribe(topics.TASK_RESULT, self._on_result)
        self.bus.subscribe(topics.MODEL_STATUS, self._on_status)

    def _on_result(self, envelope: Envelope) -> None:
        result = self._message(envelope, TaskResult)
        if self._sent_by(envelope, result.node_id):
            self._results.put(result)

    def _on_status(self, envelope: Envelope) -> None:
        status = self._message(envelope, ModelStatus)
        if not self._sent_by(envelope, status.node_id):
            return
        self._statuses.put(status)
        self._notify(self.status_listeners, status)

    @staticmethod
    def _notify(listeners: list, *args: object) -> None:
        for listener in listeners:
            try:
                listener(*args)
            except Exception:
                logger.exception("listener failed")

    def _sent_by(self, envelope: Envelope, node_id: str) -> bool:
        """Whether the message names the node whose topic it came on (the broker's ACL vouches for the topic)."""
        if envelope.params.get("node") == node_id:
            return True
        self.bus.stats.add("malformed")
        logger.warning("dropped %s on %s naming node %s", type(envelope.message).__name__, envelope.topic, node_id)
        return False

    @staticmethod
    def _message(envelope: Envelope, kind: type) -> object:
        assert isinstance(envelope.message, kind)
        return envelope.message

    # ---- the loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._wait_for_edges(stop)
        round_index = self.db.next_round()
        while not stop.is_set() and (self.config.total_rounds == 0 or round_index < self.config.total_rounds):
            if not self._edges():
                logger.warning("round %d: no edge online; waiting", round_index)
                stop.wait(2.0)
                continue
            if self.reference_probe is not None and self.reference_probe.maybe_probe():
                self.reference_gflops = max(self.reference_gflops, self.reference_probe.gflops)
            caching = is_caching_round(round_index, self.config.offloading_rounds)
            self.db.start_round(round_index, "caching" if caching else "offloading")
            started = time.monotonic()
            summary = self.run_caching_round(round_index, stop) if caching else self.run_offloading_round(round_index, stop)
            if stop.is_set():
                return  # unfinished: resumed after a restart
            summary["duration_s"] = round(time.monotonic() - started, 3)
            summary["clouds"] = self._clouds()
            self.db.finish_round(round_index, summary)
            logger.info("round %d (%s) done: %s", round_index, summary["kind"], _brief(summary))
            self._notify(self.listeners, round_index, summary)
            round_index += 1
            stop.wait(self.config.round_interval_s)

    def _wait_for_edges(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + self.config.wait_for_edges_s
        while not stop.is_set() and len(self._edges()) < self.config.min_edges and time.monotonic() < deadline:
            stop.wait(0.5)

    def _edges(self) -> list[str]:
        return sorted(n.node_id for n in self.membership.snapshot().online("edge"))

    def _clouds(self) -> list[str]:
        return sorted(n.node_id for n in self.membership.snapshot().online("cloud"))

    # ---- offloading ------------------------------------------------------------------------------

    def run_offloading_round(self, round_index: int, stop: threading.Event) -> dict:
        context = self._round_tasks(round_index)
        pending = [t for t in context.tasks.values() if t.status != "done"]
        plan = self._schedule(pending, context)
        outstanding: dict[str, Outstanding] = {}
        self._dispatch(round_index, plan, context, outstanding)
        self._collect(round_index, context, outstanding, stop)
        return self._summarise(round_index, context)

    def _round_tasks(self, round_index: int) -> RoundContext:
        stored = {t.instance_id: t for t in self.db.tasks_of(round_index)}
        if not stored:  # a new round (a resumed one keeps its tasks and finished results)
            rng = np.random.default_rng(self.config.seed + round_index)
            drawn = workload.generate_round(self.workload, round_index, self._edges(), self.task_set, rng)
            self.db.add_tasks(round_index, [(d.instance_id, d.task.task_id, d.task.task_type, d.edge_id) for d in drawn])
            stored = {t.instance_id: t for t in self.db.tasks_of(round_index)}
        return RoundContext(round_index, stored, self.tasks_by_id)

    def _schedule(self, pending: list[StoredTask], context: RoundContext) -> list[tuple[str, str, str, float]]:
        """(instance id, node id, model id, predicted latency s) for every pending task."""
        if not pending:
            return []
        routed = self._route(pending) if self.routing.active else None
        if routed is not None:
            return routed
        edges = self._edge_figures()
        fleet = build_fleet(edges, self._cost_inputs())
        known = set(fleet.model_ids)
        placement = sched.Placement({e.node_id: frozenset(self._placed(e.node_id) & known) for e in edges})
        by_task, by_type = self.db.generated_tokens()
        # The scheduler prices a task as tokens x seconds per decode token: the first token (the prompt's
        # processing) counts as as many decode tokens as it costs.
        first_token = self._first_token_in_tokens()
        tokens = {t.instance_id: max(1, round(first_token + planned_tokens(
            t.task_id, t.task_type, workload.expected_tokens(context.by_id[t.task_id]), by_task, by_type) - 1))
            for t in pending}
        problem = sched.OffloadingProblem(
            fleet=fleet,
            tasks=tuple(sched.TaskSpec(t.instance_id, t.task_type, tokens[t.instance_id]) for t in pending),
            placement=placement,
        )
        plan = self.scheduler.offload(problem)
        clouds = self._clouds()
        decisions = []
        cloud_items = []
        # Each edge runs its tasks in the plan's order: dispatch them in that order.
        for item in sorted(plan.assignments, key=lambda a: (a.edge_id or "", a.order)):
            if item.edge_id is None:
                target = self._next_cloud(clouds) or self._fallback_edge(edges)
                decisions.append((item.task_id, target, self.config.models[0], item.latency_s))
                cloud_items.append((item.task_id, target, tokens[item.task_id] * fleet.cloud.token_time_s))
            else:
                decisions.append((item.task_id, item.edge_id, item.model_id or self.initial_model, item.latency_s))
        queued = cloud_queue_latencies(cloud_items, self._cloud_overhead_s, self._cloud_backlog_s())
        return [(task_id, node, model, queued.get(task_id, latency)) for task_id, node, model, latency in decisions]

    def _route(self, pending: list[StoredTask]) -> list[tuple[str, str, str, float]] | None:
        """Every task through its arrival edge, with the route the router chose (no latency prediction);
        None without an online edge (the scheduler's own fallbacks take over)."""
        state = self.membership.snapshot()
        edges = {n.node_id: EdgeState(self._queue_depth(n.node_id, n.last_heartbeat),
                                      n.last_heartbeat.cpu_percent if n.last_heartbeat else 0.0)
                 for n in state.online("edge")}
        if not edges:
            return None
        routed = route_tasks(self.routing, [(t.instance_id, t.arrived_at_edge, t.task_type) for t in pending], edges)
        self._routes.update({item.instance_id: item.route for item in routed})
        return [(item.instance_id, item.edge_id, self._routed_model(item.edge_id), None)  # type: ignore[misc]
                for item in routed]

    def _routed_model(self, edge_id: str) -> str:
        placed = self._placed(edge_id)
        return self.initial_model if self.initial_model in placed else sorted(placed)[0]

    def _cloud_backlog_s(self) -> dict[str, float]:
        """Seconds of work each cloud worker already holds (its heartbeat's queue depth x a mean task)."""
        state = self.membership.snapshot()
        return {c: self._queue_depth(c, state.nodes[c].last_heartbeat) * self.config.max_new_tokens * self._cloud_token_s()
                for c in self._clouds()}

    def _cloud_token_s(self) -> float:
        times = [e.mean for (node, _), e in self._token_estimates.items() if node in set(self._clouds())]
        return float(np.mean(times)) if times else self.config.cloud_token_time_s

    def _placed(self, edge_id: str) -> set[str]:
        return self.placement.get(edge_id) or {self.initial_model}

    def _next_cloud(self, clouds: list[str]) -> str | None:
        if not clouds:
            return None
        self._cloud_turn += 1
        return clouds[self._cloud_turn % len(clouds)]

    @staticmethod
    def _fallback_edge(edges: list[NodeFigures]) -> str:
        return min(edges, key=lambda e: e.queue_depth).node_id

    def _dispatch(self, round_index: int, decisions: list[tuple[str, str, str, float | None]], context: RoundContext,
                  outstanding: dict[str, Outstanding]) -> None:
        by_node: dict[str, list[TaskSpec]] = {}
        now = time.time()
        deadline = now + self.config.task_deadline_s
        clouds = set(self._clouds())
        for instance_id, node_id, model_id, predicted_s in decisions:
            stored = context.tasks[instance_id]
            task = context.by_id[stored.task_id]
            by_node.setdefault(node_id, []).append(TaskSpec(
                task_id=instance_id, task_type=task_type_name(task.task_type), prompt=task.task_token,
                model_id=model_id, round_id=round_index, deadline=deadline, max_new_tokens=self.config.max_new_tokens,
                mode="standalone" if node_id in clouds else self.config.edge_mode,
                route=self._routes.pop(instance_id, ""), mining_mode=self.routing.mining_mode,
            ))
            self.db.assign(instance_id, node_id, model_id)
            if predicted_s is not None:
                self.db.record_prediction(instance_id, predicted_s)
            outstanding[instance_id] = Outstanding(instance_id, node_id, model_id, deadline, stored.attempts + 1,
                                                   now, predicted_s)
        for node_id, specs in by_node.items():
            dispatch = TaskDispatch(round_id=round_index, tasks=tuple(specs), sent_at=time.time())
            self.bus.publish(topics.TASK_DISPATCH, dispatch, expiry_s=int(self.config.task_deadline_s), node=node_id)
            logger.info("round %d: %d task(s) → %s", round_index, len(specs), node_id)

    def _collect(self, round_index: int, context: RoundContext, outstanding: dict[str, Outstanding],
                 stop: threading.Event) -> None:
        while outstanding and not stop.is_set():
            try:
                result = self._results.get(timeout=0.5)
            except queue.Empty:
                result = None
            if result is not None:
                self._accept(result, context, outstanding)
            now = time.time()
            online = set(self._edges()) | set(self._clouds())
            for item in overdue(outstanding, now, online):
                del outstanding[item.instance_id]
                self._reassign(round_index, item, context, outstanding, online)

    def _accept(self, result: TaskResult, context: RoundContext, outstanding: dict[str, Outstanding]) -> None:
        self._last_result_at[result.node_id] = time.time()
        item = outstanding.get(result.task_id)
        if item is None or result.node_id != item.node_id:
            return  # another round's, a duplicate, or a late answer from a node we gave up on
        stored = context.tasks[result.task_id]
        if result.status != "ok":
            self._notify(self.result_listeners, result, None, set(self._clouds()), item.predicted_s, None)
            logger.warning("task %s failed on %s: %s", result.task_id, result.node_id, result.error)
            del outstanding[result.task_id]
            self._reassign(context.round_index, item, context, outstanding, set(self._edges()) | set(self._clouds()))
            return
        task = context.by_id[stored.task_id]
        quality = score_task(task, _prediction(task, result)).quality
        if self.db.record_result(result.task_id, result.node_id, result.model_id, "ok", result.answer, quality,
                                 result.total_s + result.queue_wait_s + result.load_time_s, len(result.tokens)):
            del outstanding[result.task_id]
            measured_s = time.time() - item.dispatched_at
            if item.predicted_s is not None:
                self.db.record_measured(result.task_id, measured_s)
            if result.node_id in set(self._clouds()):  # what a cloud result costs beyond its queue and its run
                overhead_s = max(0.0, measured_s - result.queue_wait_s - result.load_time_s - result.total_s)
                self._cloud_overhead_s = 0.8 * self._cloud_overhead_s + 0.2 * overhead_s
            self._notify(self.result_listeners, result, quality, set(self._clouds()), item.predicted_s, measured_s)
            self._learn_times(result)

    def _learn_times(self, result: TaskResult) -> None:
        """Decode seconds per token and the first token's seconds (prompt processing), per (node, model).

        One figure per token would charge short answers' prompt processing to every token of long ones.
        """
        key, now = (result.node_id, result.model_id), time.monotonic()
        decode_tokens = len(result.tokens) - 1
        if decode_tokens >= 1 and result.total_s > result.ttft_s > 0:
            per_token = (result.total_s - result.ttft_s) / decode_tokens
            self._token_estimates[key] = observe(self._token_estimates.get(key), per_token, now, self.exploration.weight)
        if result.ttft_s > 0:
            self._first_token_estimates[key] = observe(self._first_token_estimates.get(key), result.ttft_s, now,
                                                       self.exploration.weight)

    def _first_token_in_tokens(self) -> float:
        """The first token's cost in decode tokens (prompt processing), the median over measured pairs; 1 unmeasured."""
        ratios = [first.mean / self._token_estimates[key].mean for key, first in self._first_token_estimates.items()
                  if key in self._token_estimates and self._token_estimates[key].mean > 0]
        return float(np.median(ratios)) if ratios else 1.0

    def _reassign(self, round_index: int, item: Outstanding, context: RoundContext,
                  outstanding: dict[str, Outstanding], online: set[str]) -> None:
        if item.node_id and item.attempts >= self.config.max_attempts:
            logger.error("task %s gave up after %d attempts", item.instance_id, item.attempts)
            self.db.record_result(item.instance_id, item.node_id, item.model_id, "failed", "", None, 0.0, 0)
            return
        candidates = self._clouds() + [e for e in self._edges() if e in online]
        target = reassignment_target(item.node_id, candidates) or (candidates[0] if candidates else None)
        if target is None:
            # Nobody to give it to: park it (not an attempt) and look again shortly; never drop it.
            outstanding[item.instance_id] = replace(item, node_id="", deadline=time.time() + PARK_S)
            return
        logger.warning("round %d: task %s reassigned from %s to %s", round_index, item.instance_id, item.node_id, target)
        model_id = item.model_id if target in self._clouds() else next(iter(self._placed(target)))
        context.tasks[item.instance_id] = _with_attempts(context.tasks[item.instance_id], item.attempts)
        self._dispatch(round_index, [(item.instance_id, target, model_id, None)], context, outstanding)

    def _summarise(self, round_index: int, context: RoundContext) -> dict:
        rows = self.db.results_of(round_index)
        ok = [r for r in rows if r[5] == "ok"]
        per_type: dict[str, list[float]] = {}
        for row in ok:
            per_type.setdefault(task_type_name(row[2]), []).append(row[7])
        where: dict[str, int] = {}
        for row in rows:
            where[row[3]] = where.get(row[3], 0) + 1
        latencies = [r[8] for r in ok]
        errors = [prediction_error_pct(p, m) for _, p, m in self.db.predictions_of(round_index) if m is not None]
        return {
            "kind": "offloading", "round": round_index, "tasks": len(context.tasks), "ok": len(ok),
            "failed": len(rows) - len(ok), "where": where,
            "cloud_tasks": sum(n for node, n in where.items() if node in set(self._clouds())),
            "latency_mean_s": float(np.mean(latencies)) if latencies else 0.0,
            "latency_p95_s": float(np.percentile(latencies, 95)) if latencies else 0.0,
            "quality": {name: float(np.mean(values)) for name, values in per_type.items()},
            "prediction_error_pct_median": float(np.median(errors)) if errors else None,
            "quality_keep": self.config.quality_keep,
        }

    # ---- caching ---------------------------------------------------------------------------------

    def run_caching_round(self, round_index: int, stop: threading.Event) -> dict:
        edges = self._edge_figures()
        fleet = build_fleet(edges, self._cost_inputs())
        known = set(fleet.model_ids)
        current = sched.Placement({e.node_id: frozenset(self._placed(e.node_id) & known) for e in edges})
        recent = [self._round_tasks_as_workload(r) for r in range(max(0, round_index - self.config.offloading_rounds),
                                                                   round_index)]
        recent = [r for r in recent if r] or [()]
        demand = workload.recent_demand(recent) if any(recent) else tuple(
            sched.TypeDemand(t, 1, 10.0) for t in range(5))
        plan = self.scheduler.cache(sched.CachingProblem(fleet=fleet, demand=demand, current=current,
                                                         horizon_rounds=self.config.offloading_rounds))
        started = time.monotonic()
        wanted = {(edge, model) for edge, model in plan.deployments}
        commands = {}
        for edge_id, model_id in sorted(wanted):
            command = self.deploy_command(model_id, f"deploy-{round_index}-{edge_id}-{model_id}", True)
            commands[(edge_id, model_id)] = command
            self.bus.publish(topics.NODE_COMMAND, command, node=edge_id)
        ready, failed = self._await_deployments(set(commands), stop)
        previous = {edge.node_id: sorted(self._placed(edge.node_id)) for edge in edges}
        new_placement: dict[str, set[str]] = {}
        changes = []
        for edge in edges:
            target = set(plan.placement.models_on(edge.node_id))
            deployed_here = {m for (e, m) in wanted if e == edge.node_id}
            if deployed_here - {m for (e, m) in ready if e == edge.node_id}:
                target = self._placed(edge.node_id)  # not every deployment made it: keep the old placement
                status = "kept"
            else:
                status = "deployed"
                for model_id in self._placed(edge.node_id) - target:
                    self.bus.publish(topics.NODE_COMMAND, NodeCommand(
                        command_id=f"unload-{round_index}-{edge.node_id}-{model_id}", kind="unload_model",
                        model_id=model_id), node=edge.node_id)
            if target != self._placed(edge.node_id):
                changes.append({"edge": edge.node_id, "before": sorted(self._placed(edge.node_id)),
                                "after": sorted(target)})
            new_placement[edge.node_id] = target
            for model_id in target:
                self.db.record_placement(round_index, edge.node_id, model_id, status)
        self.placement = new_placement
        return {
            "kind": "caching", "round": round_index, "previous": previous,
            "placement": {e: sorted(m) for e, m in new_placement.items()},
            "deployments": len(wanted), "ready": len(ready), "failed": sorted(f"{e}:{m}" for e, m in failed),
            "changes": changes, "deploy_s": round(time.monotonic() - started, 2),
            "predicted_round_latency_s": plan.round_latency_s,
        }

    def _await_deployments(self, wanted: set[tuple[str, str]], stop: threading.Event) -> tuple[set, set]:
        ready: set[tuple[str, str]] = set()
        failed: set[tuple[str, str]] = set()
        deadline = time.monotonic() + self.config.deploy_timeout_s
        while wanted - ready - failed and time.monotonic() < deadline and not stop.is_set():
            try:
                status = self._statuses.get(timeout=0.5)
            except queue.Empty:
                continue
            key = (status.node_id, status.model_id)
            if key not in wanted:
                continue
            if status.state == "ready":
                ready.add(key)
            elif status.state == "failed":
                logger.warning("deploy of %s on %s failed: %s", status.model_id, status.node_id, status.reason)
                failed.add(key)
        timed_out = wanted - ready - failed
        for edge_id, model_id in sorted(timed_out):
            logger.warning("deploy of %s on %s not ready in %.0f s: old placement kept", model_id, edge_id,
                           self.config.deploy_timeout_s)
        return ready, failed | timed_out

    def _round_tasks_as_workload(self, round_index: int) -> tuple[workload.RoundTask, ...]:
        return tuple(workload.RoundTask(t.instance_id, t.arrived_at_edge, self.tasks_by_id[t.task_id])
                     for t in self.db.tasks_of(round_index) if t.task_id in self.tasks_by_id)

    # ---- figures ---------------------------------------------------------------------------------

    def _edge_figures(self) -> list[NodeFigures]:
        state = self.membership.snapshot()
        return [
            NodeFigures(n.node_id, n.capabilities.memory_bytes, _best_gflops(n.capabilities.gflops, n.last_heartbeat),
                        self._queue_depth(n.node_id, n.last_heartbeat), n.capabilities.host_id,
                        n.capabilities.cores)
            for n in sorted(state.online("edge"), key=lambda n: n.node_id)
        ]

    def _queue_depth(self, node_id: str, heartbeat: Heartbeat | None) -> int:
        """The node's queue from its heartbeat, unless the heartbeat predates its last result to us.

        Rounds collect every result before the next starts: a heartbeat sent before the last of them
        counts tasks that are done (heartbeats come every ~2 s, so most are that stale at round start).
        """
        if heartbeat is None or heartbeat.timestamp <= self._last_result_at.get(node_id, 0.0):
            return 0
        return heartbeat.queue_depth

    def _cost_inputs(self) -> CostInputs:
        now = time.monotonic()
        quality: dict[tuple[str, int], Estimate] = {}
        for model_id, task_type, value in reversed(self.db.quality_history()):  # oldest first
            previous = quality.get((model_id, task_type))
            # Quality of a (model, type) does not drift: a running mean, every evaluation weighs alike.
            weight = 1.0 / (previous.samples + 1) if previous else 1.0
            quality[(model_id, task_type)] = observe(previous, value, now, weight)
        clouds = self._clouds()
        state = self.membership.snapshot()
        # One cloud worker runs its tasks one after another: what it already holds delays new ones.
        cloud_queue = sum(self._queue_depth(c, state.nodes[c].last_heartbeat) for c in clouds)
        cloud_token_s = self._cloud_token_s()
        nodes_per_host: dict[str, int] = {}
        for node in state.nodes.values():
            if node.online and node.capabilities.host_id:
                nodes_per_host[node.capabilities.host_id] = nodes_per_host.get(node.capabilities.host_id, 0) + 1
        return CostInputs(
            models=tuple(p for p in self.profiles if p.model_id in self.config.models),
            reference_gflops=self.reference_gflops,
            cloud_model=self.config.models[0],
            cloud_token_time_s=cloud_token_s,
            cloud_latency_s=(self.config.cloud_latency_s + cloud_queue * self.config.max_new_tokens * cloud_token_s
                             / max(1, len(clouds))) if clouds else 1e6,
            quality_keep=self.config.quality_keep,
            token_estimates={k: v for k, v in self._token_estimates.items() if k[0] not in clouds},
            quality_estimates=quality,
            nodes_per_host=nodes_per_host,
            now=now,
            exploration=self.exploration,
        )


def _best_gflops(birth_gflops: float, heartbeat: object | None) -> float:
    """The heartbeat's re-measured probe when it has one, else the birth's."""
    measured = getattr(heartbeat, "gflops", 0.0) if heartbeat is not None else 0.0
    return measured if measured > 0 else birth_gflops


def _prediction(task: workload.Task, result: TaskResult) -> str | list[str]:
    return prediction_from_answer(task.task_type, result.parsed, result.answer)  # type: ignore[return-value]


def _with_attempts(task: StoredTask, attempts: int) -> StoredTask:
    return replace(task, attempts=attempts)


def _brief(summary: dict) -> str:
    if summary["kind"] == "caching":
        return f"placement {summary['placement']}, {summary['ready']}/{summary['deployments']} deployed"
    return (f"{summary['ok']}/{summary['tasks']} ok, mean {summary['latency_mean_s']:.2f} s, "
            f"quality {summary['quality']}, where {summary['where']}")
