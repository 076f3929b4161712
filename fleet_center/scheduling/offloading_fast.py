"""Fast task offloading: a sparse min-cost assignment of tasks to (edge, position) slots.

Summed latency on serialising edges is the scheduling problem R||sum C_j, which is an assignment
problem once positions are counted from the end of each edge's run order (Horn 1973; Bruno, Coffman
and Sethi 1974): see `costs`. So instead of a heuristic we solve that assignment exactly with
LAPJVsp (scipy's `min_weight_full_bipartite_matching`) on a pruned graph:

1. the model per (task, edge) is the fastest cached one meeting the floor (exact under floors);
2. positions past `position_bound` are dropped (exact: the cloud beats them);
3. only when the graph would exceed `max_arcs` (1,000 edges x 10,000 tasks), a greedy list
   schedule prices each edge's congestion, and each task keeps its `edges_per_task` cheapest edges
   at that congestion plus its greedy edge. Step 3 is the only place optimality can be lost; the
   greedy's own choices stay in the graph, so the matching starts from at least that plan.

Every task also gets a private cloud column, so a full matching always exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from fleet_center.scheduling.costs import fleet_arrays, plan_from_slots, position_bound, task_arrays
from fleet_center.scheduling.problem import OffloadingPlan, OffloadingProblem

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FastConfig:
    """Tuning of the fast offloading solver; the defaults are exact up to a few hundred edges."""

    max_arcs: int = 2_000_000  # graph size above which candidate pairs are pruned, arcs
    edges_per_task: int = 12  # cheapest edges (at greedy congestion) each task keeps when pruning


def greedy_loads(cloud_s: np.ndarray, const_s: np.ndarray, processing_s: np.ndarray) -> np.ndarray:
    """Greedy edge index per task (-1 = cloud), placing tasks longest first.

    Taken longest first, each task is (about) the shortest yet on whichever edge it joins, so it runs
    before the others there and its marginal cost is `const + (tasks already there + 1) * processing`
    (it delays everyone behind it). This is the classic list rule that is exact on identical
    machines; here it prices congestion for candidate pruning.
    """
    num_tasks, num_edges = processing_s.shape
    count = np.zeros(num_edges)
    edge_of_task = np.full(num_tasks, -1, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        shortest = np.min(processing_s, axis=1, initial=np.inf)
    for task in np.argsort(-np.where(np.isfinite(shortest), shortest, -1.0), kind="stable"):
        marginal = const_s + (count + 1.0) * processing_s[task]
        edge = int(np.argmin(marginal))
        if marginal[edge] < cloud_s[task]:
            edge_of_task[task] = edge
            count[edge] += 1.0
    return edge_of_task


def _candidates(
    cloud_s: np.ndarray, const_s: np.ndarray, processing_s: np.ndarray, bound: np.ndarray, config: FastConfig
) -> np.ndarray:
    """(n, E) bool mask of (task, edge) pairs kept in the graph."""
    usable = bound > 0
    if int(bound.sum()) <= config.max_arcs:
        return usable
    num_tasks, num_edges = processing_s.shape
    greedy = greedy_loads(cloud_s, const_s, processing_s)
    load = np.bincount(greedy[greedy >= 0], minlength=num_edges).astype(float)
    # Rank edges per task by the cost of the last position the greedy filled there: a fast edge
    # that everyone wants looks as expensive as it will be once shared.
    congested = np.where(usable, const_s[None, :] + np.maximum(load, 1.0)[None, :] * processing_s, np.inf)
    per_task = min(config.edges_per_task, num_edges)
    top_edges = np.argpartition(congested, per_task - 1, axis=1)[:, :per_task]
    keep = np.zeros_like(usable)
    keep[np.arange(num_tasks)[:, None], top_edges] = True
    placed = np.flatnonzero(greedy >= 0)
    keep[placed, greedy[placed]] = True  # the greedy plan stays feasible, so we never do worse
    return keep & usable


def solve_offloading_fast(problem: OffloadingProblem, config: FastConfig | None = None) -> OffloadingPlan:
    """Offloading plan minimising summed latency under the quality floors, for fleet-sized inputs.

    Raises ValueError (from scipy) only if the matching fails, which the cloud columns rule out.
    """
    config = config or FastConfig()
    arrays = fleet_arrays(problem.fleet)
    tasks = task_arrays(problem, arrays)
    num_tasks = tasks.tokens.size
    edge_of_task = np.full(num_tasks, -1, dtype=np.int64)
    model_of_task = np.full(num_tasks, -1, dtype=np.int64)
    if num_tasks == 0:
        return plan_from_slots(problem, arrays, edge_of_task, model_of_task, solver="fast")
    const = arrays.edge_const_s
    bound = np.minimum(position_bound(tasks.cloud_s[:, None], const[None, :], tasks.processing_s), num_tasks)
    keep = _candidates(tasks.cloud_s, const, tasks.processing_s, bound, config)
    pair_task, pair_edge = np.nonzero(keep)
    pair_bound = bound[pair_task, pair_edge]
    slots_per_edge = np.zeros(const.size, dtype=np.int64)
    np.maximum.at(slots_per_edge, pair_edge, pair_bound)
    slot_offset = np.cumsum(slots_per_edge) - slots_per_edge
    num_slots = int(slots_per_edge.sum())

    arc_task = np.repeat(pair_task, pair_bound)
    arc_edge = np.repeat(pair_edge, pair_bound)
    position = np.arange(arc_task.size) - np.repeat(np.cumsum(pair_bound) - pair_bound, pair_bound) + 1
    arc_cost = const[arc_edge] + position * tasks.processing_s[arc_task, arc_edge]
    # Costs are all positive (positive processing), as LAPJVsp needs non-zero weights.
    rows = np.concatenate([arc_task, np.arange(num_tasks)])
    cols = np.concatenate([slot_offset[arc_edge] + position - 1, num_slots + np.arange(num_tasks)])
    weights = np.concatenate([arc_cost, tasks.cloud_s]) + 1.0  # +1: a zero-latency cloud stays non-zero
    graph = csr_matrix((weights, (rows, cols)), shape=(num_tasks, num_slots + num_tasks))
    matched_rows, matched_cols = min_weight_full_bipartite_matching(graph)

    on_slot = matched_cols < num_slots
    slot_edge = np.repeat(np.arange(const.size), slots_per_edge)
    chosen_tasks = matched_rows[on_slot]
    edge_of_task[chosen_tasks] = slot_edge[matched_cols[on_slot]]
    model_of_task[chosen_tasks] = tasks.model_index[chosen_tasks, edge_of_task[chosen_tasks]]
    logger.debug(
        "fast offloading: %d tasks, %d slots, %d arcs, %d on edges",
        num_tasks,
        num_slots,
        arc_task.size,
        int(on_slot.sum()),
    )
    return plan_from_slots(problem, arrays, edge_of_task, model_of_task, solver="fast")
