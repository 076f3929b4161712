"""Exact task offloading as a MILP (scipy.optimize.milp / HiGHS): the reference for small instances.

Variables x[j, e, m, k] = 1 when task j runs on edge e with cached model m at position k counted
from the end of the edge's run order, and u[j] = 1 when it goes to the cloud. Every task takes one
option; every (edge, position) slot holds at most one task. Unlike the fast solver this keeps the
model choice as a variable instead of pre-selecting the fastest allowed model, so agreement between
the two checks that reduction too. Slots beyond `position_bound` are left out: no optimal plan uses
them, so the optimum is unchanged.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_matrix

from fleet_center.scheduling.costs import (
    FleetArrays,
    cached_mask,
    fleet_arrays,
    plan_from_slots,
    position_bound,
)
from fleet_center.scheduling.problem import OffloadingPlan, OffloadingProblem

logger = logging.getLogger(__name__)

# HiGHS stops at a 1e-4 relative gap by default; a reference solver should be tighter than the
# differences it is used to measure.
MIP_REL_GAP = 1e-7


class SolverError(RuntimeError):
    """The exact solver found no optimal solution within its time limit."""


def _slot_columns(problem: OffloadingProblem, arrays: FleetArrays, prune: bool) -> dict[str, np.ndarray]:
    """One entry per usable (task, edge, model, position): their indices and objective costs."""
    types = np.array([task.task_type for task in problem.tasks], dtype=np.int64)
    tokens = np.array([task.expected_tokens for task in problem.tasks], dtype=float)
    cloud = arrays.cloud_latency_s + tokens * arrays.cloud_token_time_s
    cached = cached_mask(arrays, problem.placement)
    parts: dict[str, list[np.ndarray]] = {"task": [], "edge": [], "model": [], "position": [], "cost": []}
    for edge, model in zip(*np.nonzero(cached), strict=True):
        tasks = np.flatnonzero(arrays.allowed[types, model] & np.isfinite(arrays.token_time_s[edge, model]))
        processing = tokens[tasks] * arrays.token_time_s[edge, model]
        bound = np.full(tasks.size, len(problem.tasks), dtype=np.int64)
        if prune:
            bound = np.minimum(position_bound(cloud[tasks], arrays.edge_const_s[edge], processing), bound)
        task_rep = np.repeat(tasks, bound)
        # Positions 1..bound for each task, flattened.
        position = np.arange(task_rep.size) - np.repeat(np.cumsum(bound) - bound, bound) + 1
        parts["task"].append(task_rep)
        parts["edge"].append(np.full(task_rep.size, edge))
        parts["model"].append(np.full(task_rep.size, model))
        parts["position"].append(position)
        parts["cost"].append(arrays.edge_const_s[edge] + position * np.repeat(processing, bound))
    columns = {key: np.concatenate(value) if value else np.zeros(0) for key, value in parts.items()}
    columns["cloud"] = cloud
    return columns


def solve_offloading_exact(
    problem: OffloadingProblem, time_limit_s: float = 30.0, prune_positions: bool = True
) -> OffloadingPlan:
    """Optimal offloading plan (minimum summed latency under the quality floors).

    `prune_positions=False` keeps every position up to the task count, so tests can check that
    `position_bound` never cuts off the optimum.

    Raises SolverError if HiGHS does not prove optimality within `time_limit_s`.
    """
    arrays = fleet_arrays(problem.fleet)
    num_tasks = len(problem.tasks)
    columns = _slot_columns(problem, arrays, prune_positions)
    task = columns["task"].astype(np.int64)
    num_slot_vars = task.size
    # Slot ids: (edge, position) pairs that appear at all, numbered densely.
    max_position = int(columns["position"].max()) if num_slot_vars else 0
    slot_key = columns["edge"].astype(np.int64) * (max_position + 1) + columns["position"].astype(np.int64)
    _, slot_id = np.unique(slot_key, return_inverse=True)
    num_slots = int(slot_id.max()) + 1 if num_slot_vars else 0

    num_vars = num_slot_vars + num_tasks  # slot variables, then one cloud variable per task
    cost = np.concatenate([columns["cost"], columns["cloud"]])
    rows = np.concatenate([task, np.arange(num_tasks), num_tasks + slot_id])
    cols = np.concatenate(
        [np.arange(num_slot_vars), num_slot_vars + np.arange(num_tasks), np.arange(num_slot_vars)]
    )
    matrix = csr_matrix((np.ones(rows.size), (rows, cols)), shape=(num_tasks + num_slots, num_vars))
    lower = np.concatenate([np.ones(num_tasks), np.zeros(num_slots)])
    upper = np.ones(num_tasks + num_slots)
    result = milp(
        c=cost,
        constraints=LinearConstraint(matrix, lower, upper),
        integrality=np.ones(num_vars),
        bounds=Bounds(0, 1),
        options={"time_limit": time_limit_s, "mip_rel_gap": MIP_REL_GAP},
    )
    if result.status != 0 or result.x is None:
        raise SolverError(f"offloading MILP: {result.message} (status {result.status})")
    chosen = np.flatnonzero(result.x[:num_slot_vars] > 0.5)
    edge_of_task = np.full(num_tasks, -1, dtype=np.int64)
    model_of_task = np.full(num_tasks, -1, dtype=np.int64)
    edge_of_task[task[chosen]] = columns["edge"][chosen].astype(np.int64)
    model_of_task[task[chosen]] = columns["model"][chosen].astype(np.int64)
    logger.debug("offloading MILP: %d tasks, %d variables, objective %.3f s", num_tasks, num_vars, result.fun)
    return plan_from_slots(problem, arrays, edge_of_task, model_of_task, solver="milp")
