"""The latency cost model as numpy arrays, shared by every solver, and the plan evaluator.

A task on an edge waits for the edge's link round trip and queued work, then for every task
dispatched to the edge before it (an edge runs its tasks one at a time), then for its own
processing: expected tokens x seconds per token of the model it runs on. A cloud task pays the
cloud's fixed latency plus its own processing and never queues. The objective is the sum of task
latencies. With tasks numbered by position from the *end* of an edge's run order (k = 1 is run
last), a task at position k contributes `edge_const + k * processing` to that sum, because it delays
itself and the k - 1 tasks after it. That makes offloading an assignment of tasks to (edge, position)
slots, which both solvers exploit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fleet_center.scheduling.problem import (
    NUM_TASK_TYPES,
    Fleet,
    OffloadingPlan,
    OffloadingProblem,
    Placement,
    ProblemError,
    TaskAssignment,
)

logger = logging.getLogger(__name__)

# Slack on position bounds so rounding never prunes a slot that ties with the cloud.
_BOUND_EPS = 1e-9


@dataclass(frozen=True)
class FleetArrays:
    """The fleet as dense arrays, indexed by edge (E), model (M) and task type (T)."""

    edge_ids: tuple[str, ...]
    model_ids: tuple[str, ...]
    token_time_s: np.ndarray  # (E, M) seconds per token, inf where the model cannot run
    load_time_s: np.ndarray  # (E, M) deployment seconds (0 where unknown)
    memory_bytes: np.ndarray  # (E,)
    model_bytes: np.ndarray  # (M,)
    edge_const_s: np.ndarray  # (E,) link round trip + queued work
    allowed: np.ndarray  # (T, M) bool: the model meets the quality floor of the type
    cloud_token_time_s: float
    cloud_latency_s: float


def fleet_arrays(fleet: Fleet) -> FleetArrays:
    """Turn a validated Fleet into dense arrays."""
    model_ids = fleet.model_ids
    column = {model_id: index for index, model_id in enumerate(model_ids)}
    num_edges, num_models = len(fleet.edges), len(model_ids)
    token_time = np.full((num_edges, num_models), np.inf)
    load_time = np.zeros((num_edges, num_models))
    for row, edge in enumerate(fleet.edges):
        for model_id, seconds in edge.token_time_s.items():
            token_time[row, column[model_id]] = seconds
        for model_id, seconds in edge.load_time_s.items():
            load_time[row, column[model_id]] = seconds
    quality = np.array([fleet.quality[model_id] for model_id in model_ids]).reshape(
        num_models, NUM_TASK_TYPES
    )
    floor = np.asarray(fleet.quality_floor)
    return FleetArrays(
        edge_ids=tuple(edge.edge_id for edge in fleet.edges),
        model_ids=model_ids,
        token_time_s=token_time,
        load_time_s=load_time,
        memory_bytes=np.array([edge.memory_bytes for edge in fleet.edges], dtype=np.int64),
        model_bytes=np.array([model.size_bytes for model in fleet.models], dtype=np.int64),
        edge_const_s=np.array([edge.link_latency_s + edge.queue_delay_s for edge in fleet.edges]),
        allowed=(quality >= floor[None, :] - 1e-12).T,
        cloud_token_time_s=fleet.cloud.token_time_s,
        cloud_latency_s=fleet.cloud.latency_s,
    )


def cached_mask(arrays: FleetArrays, placement: Placement) -> np.ndarray:
    """(E, M) bool: model m is cached on edge e."""
    column = {model_id: index for index, model_id in enumerate(arrays.model_ids)}
    mask = np.zeros((len(arrays.edge_ids), len(arrays.model_ids)), dtype=bool)
    for row, edge_id in enumerate(arrays.edge_ids):
        for model_id in placement.models_on(edge_id):
            mask[row, column[model_id]] = True
    return mask


@dataclass(frozen=True)
class TaskArrays:
    """A round's tasks priced against a fixed placement."""

    task_types: np.ndarray  # (n,) int
    tokens: np.ndarray  # (n,) float
    cloud_s: np.ndarray  # (n,) latency if sent to the cloud
    processing_s: np.ndarray  # (n, E) processing time with the fastest allowed cached model, inf if none
    model_index: np.ndarray  # (n, E) int index of that model, -1 if none


def best_model_per_type(arrays: FleetArrays, cached: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (type, edge): seconds per token of the fastest cached model meeting the floor, and its index.

    Under a quality floor the fastest allowed model is always the right choice: a shorter
    processing time never lengthens anyone's latency.
    """
    # (T, E, M): token time where the model is cached on the edge and allowed for the type.
    usable = cached[None, :, :] & arrays.allowed[:, None, :]
    times = np.where(usable, arrays.token_time_s[None, :, :], np.inf)
    index = np.argmin(times, axis=2)
    best = np.take_along_axis(times, index[:, :, None], axis=2)[:, :, 0]
    index = np.where(np.isfinite(best), index, -1)
    return best, index


def task_arrays(problem: OffloadingProblem, arrays: FleetArrays) -> TaskArrays:
    """Price every task on every edge under the problem's placement."""
    types = np.array([task.task_type for task in problem.tasks], dtype=np.int64)
    tokens = np.array([task.expected_tokens for task in problem.tasks], dtype=float)
    per_token, index = best_model_per_type(arrays, cached_mask(arrays, problem.placement))
    return TaskArrays(
        task_types=types,
        tokens=tokens,
        cloud_s=arrays.cloud_latency_s + tokens * arrays.cloud_token_time_s,
        processing_s=tokens[:, None] * per_token[types, :],
        model_index=index[types, :],
    )


def position_bound(cloud_s: np.ndarray, edge_const_s: np.ndarray, processing_s: np.ndarray) -> np.ndarray:
    """Largest useful position (counted from the end) of each task on each edge; broadcasting.

    A task at position k costs at least `edge_const + k * processing`; if that exceeds its cloud
    latency, moving it to the cloud lowers the total (the tasks after it finish earlier and no one
    else waits longer), so no optimal plan puts it there. Returns an int array, 0 = never.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = np.floor((cloud_s - edge_const_s) / processing_s + _BOUND_EPS)
    bound = np.where(np.isfinite(bound), bound, 0)
    return np.clip(bound, 0, None).astype(np.int64)


def plan_from_slots(
    problem: OffloadingProblem,
    arrays: FleetArrays,
    edge_of_task: np.ndarray,
    model_of_task: np.ndarray,
    solver: str,
) -> OffloadingPlan:
    """Build a plan from an edge index per task (-1 = cloud) and model index per task.

    Tasks on an edge run shortest-processing-time first, which minimises the sum of their
    latencies for a fixed set of tasks; latencies are then computed exactly by `evaluate`.
    """
    tokens = np.array([task.expected_tokens for task in problem.tasks], dtype=float)
    order = np.zeros(len(problem.tasks), dtype=np.int64)
    on_edge = np.flatnonzero(edge_of_task >= 0)
    processing = tokens[on_edge] * arrays.token_time_s[edge_of_task[on_edge], model_of_task[on_edge]]
    # Sort by (edge, processing, task index) so equal work keeps a stable, reproducible order.
    ranked = on_edge[np.lexsort((on_edge, processing, edge_of_task[on_edge]))]
    if ranked.size:
        edges_sorted = edge_of_task[ranked]
        starts = np.r_[0, np.flatnonzero(np.diff(edges_sorted)) + 1]
        group_start = np.repeat(starts, np.diff(np.r_[starts, ranked.size]))
        order[ranked] = np.arange(ranked.size) - group_start
    assignments = tuple(
        TaskAssignment(
            task_id=task.task_id,
            edge_id=arrays.edge_ids[edge_of_task[i]] if edge_of_task[i] >= 0 else None,
            model_id=arrays.model_ids[model_of_task[i]] if edge_of_task[i] >= 0 else None,
            order=int(order[i]),
            latency_s=0.0,
        )
        for i, task in enumerate(problem.tasks)
    )
    return evaluate(problem, OffloadingPlan(assignments=assignments, total_latency_s=0.0, solver=solver))


def evaluate(problem: OffloadingProblem, plan: OffloadingPlan) -> OffloadingPlan:
    """Recompute every latency of `plan` by simulating each edge's queue; returns the priced plan.

    Raises ProblemError if the plan misses or repeats a task, uses a model the edge does not
    cache, breaks a quality floor, or gives two tasks on one edge the same order.
    """
    fleet = problem.fleet
    edges = {edge.edge_id: edge for edge in fleet.edges}
    tasks = {task.task_id: task for task in problem.tasks}
    if sorted(item.task_id for item in plan.assignments) != sorted(tasks):
        raise ProblemError("plan: must assign every task exactly once")
    latency: dict[str, float] = {}
    by_edge: dict[str, list] = {}
    for item in plan.assignments:
        task = tasks[item.task_id]
        if item.edge_id is None:
            latency[item.task_id] = fleet.cloud.latency_s + task.expected_tokens * fleet.cloud.token_time_s
            continue
        if item.model_id not in problem.placement.models_on(item.edge_id):
            raise ProblemError(f"plan: task {item.task_id} uses {item.model_id} not cached on {item.edge_id}")
        if fleet.quality[item.model_id][task.task_type] < fleet.quality_floor[task.task_type] - 1e-12:
            raise ProblemError(f"plan: task {item.task_id} on {item.model_id} breaks the quality floor")
        by_edge.setdefault(item.edge_id, []).append(item)
    for edge_id, items in by_edge.items():
        edge = edges[edge_id]
        items.sort(key=lambda item: item.order)
        if len({item.order for item in items}) != len(items):
            raise ProblemError(f"plan: two tasks share an order on edge {edge_id}")
        clock = edge.link_latency_s + edge.queue_delay_s
        for item in items:
            clock += tasks[item.task_id].expected_tokens * edge.token_time_s[item.model_id]
            latency[item.task_id] = clock
    priced = tuple(
        TaskAssignment(item.task_id, item.edge_id, item.model_id, item.order, latency[item.task_id])
        for item in plan.assignments
    )
    return OffloadingPlan(priced, float(sum(latency.values())), plan.solver)
