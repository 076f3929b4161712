"""Model caching: which models each edge holds for the next rounds, counting deployment cost.

The decision is priced with the offloading cost model itself, on a *representative round*: the
recent demand per task type (tasks per round, mean tokens) becomes that many identical tasks. A
placement's cost is `horizon_rounds x` the optimal summed latency of that round under the placement,
plus `deploy_weight x` the load seconds of every model an edge must fetch (keeping one is free,
evicting one is free). Both solvers return plans priced by the same evaluator.

Exact: one MILP over y[e, m] (edge e holds model m) and x[t, e, m, k] (a task of type t runs on e
with m at position k from the end), with memory knapsacks per edge. Tasks of one type are identical,
so variables are per type, not per task, which removes their symmetry.

Fast: the same model's LP relaxation, rounded per edge by fractional value under memory, with the
models an edge already holds filling what memory is left (they are free and only add options).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_matrix

from fleet_center.scheduling.costs import FleetArrays, cached_mask, fleet_arrays, position_bound
from fleet_center.scheduling.offloading_exact import MIP_REL_GAP, SolverError
from fleet_center.scheduling.offloading_fast import solve_offloading_fast
from fleet_center.scheduling.problem import (
    CachingPlan,
    CachingProblem,
    OffloadingProblem,
    Placement,
    TaskSpec,
)

logger = logging.getLogger(__name__)


def representative_tasks(problem: CachingProblem) -> tuple[TaskSpec, ...]:
    """The demand as one round of identical tasks per type (mean tokens rounded, at least 1)."""
    return tuple(
        TaskSpec(f"demand-{item.task_type}-{index}", item.task_type, max(1, round(item.mean_tokens)))
        for item in problem.demand
        for index in range(item.tasks_per_round)
    )


def _deploy_cost(problem: CachingProblem, arrays: FleetArrays) -> np.ndarray:
    """(E, M) seconds charged if edge e holds model m next: 0 for models it already has."""
    return np.where(cached_mask(arrays, problem.current), 0.0, arrays.load_time_s)


def price_placement(problem: CachingProblem, placement: Placement, solver: str) -> CachingPlan:
    """Price `placement` for `problem`: representative round latency plus deployment.

    The round is solved by the fast offloading solver, which is exact while the round's graph
    stays under `FastConfig.max_arcs` (every MILP-sized instance).

    Raises ProblemError if the placement overfills an edge or names unknown models.
    """
    fleet = problem.fleet
    fleet.check_placement(placement, "placement")
    round_plan = solve_offloading_fast(OffloadingProblem(fleet, representative_tasks(problem), placement))
    deployments, evictions = [], []
    deploy_s = 0.0
    for edge in fleet.edges:
        now, nxt = problem.current.models_on(edge.edge_id), placement.models_on(edge.edge_id)
        for model_id in sorted(nxt - now):
            deployments.append((edge.edge_id, model_id))
            deploy_s += edge.load_time_s.get(model_id, 0.0)
        evictions.extend((edge.edge_id, model_id) for model_id in sorted(now - nxt))
    return CachingPlan(
        placement=placement,
        deployments=tuple(deployments),
        evictions=tuple(evictions),
        round_latency_s=round_plan.total_latency_s,
        deploy_cost_s=deploy_s,
        objective_s=problem.horizon_rounds * round_plan.total_latency_s + problem.deploy_weight * deploy_s,
        solver=solver,
    )


@dataclass(frozen=True)
class _CachingModel:
    """The caching MILP in scipy's matrix form; y variables come first."""

    cost: np.ndarray
    matrix: csr_matrix
    lower: np.ndarray
    upper: np.ndarray
    integrality: np.ndarray
    variable_upper: np.ndarray  # 1 for y and x, the type's demand for its cloud count
    num_edges: int
    num_models: int


def _concat_int(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _slot_variables(problem: CachingProblem, arrays: FleetArrays) -> dict[str, np.ndarray]:
    """x variables: one per (demand type, edge, model, position) that can appear in an optimum."""
    demand = [item for item in problem.demand if item.tasks_per_round > 0]
    # A position counts every task behind it on the edge, of any type, so the cap is the whole round.
    total_tasks = sum(item.tasks_per_round for item in demand)
    parts: dict[str, list[np.ndarray]] = {"type": [], "edge": [], "model": [], "position": [], "cost": []}
    for type_row, item in enumerate(demand):
        tokens = max(1, round(item.mean_tokens))
        cloud = arrays.cloud_latency_s + tokens * arrays.cloud_token_time_s
        processing = tokens * arrays.token_time_s  # (E, M), inf where the model cannot run
        bound = position_bound(cloud, arrays.edge_const_s[:, None], processing)
        bound = np.minimum(bound, total_tasks) * arrays.allowed[item.task_type][None, :]
        edges, models = np.nonzero(bound)
        counts = bound[edges, models]
        position = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 1
        edges, models = np.repeat(edges, counts), np.repeat(models, counts)
        parts["type"].append(np.full(edges.size, type_row))
        parts["edge"].append(edges)
        parts["model"].append(models)
        parts["position"].append(position)
        parts["cost"].append(arrays.edge_const_s[edges] + position * processing[edges, models])
    columns = {key: _concat_int(value) for key, value in parts.items() if key != "cost"}
    columns["cost"] = np.concatenate(parts["cost"]) if parts["cost"] else np.zeros(0)
    return columns


class _Rows:
    """Constraint rows collected block by block, in scipy's sparse (row, column, value) form."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.count = 0

    def add(
        self, row_ids: np.ndarray, cols: np.ndarray, vals: np.ndarray, lower: np.ndarray, upper: np.ndarray
    ) -> None:
        """A block of `lower.size` rows; `row_ids` number them from 0 within the block."""
        self.rows.append(self.count + row_ids)
        self.cols.append(cols)
        self.vals.append(vals)
        self.lower.append(lower)
        self.upper.append(upper)
        self.count += lower.size

    def matrix(self, num_vars: int) -> csr_matrix:
        triplets = (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols)))
        return csr_matrix(triplets, shape=(self.count, num_vars))


def _add_slot_rows(rows: _Rows, x: dict[str, np.ndarray], x_index: np.ndarray, num_models: int) -> None:
    """Each (edge, position) holds at most one task, and only with a model the edge holds."""
    num_x = x_index.size
    max_pos = int(x["position"].max()) + 1 if num_x else 1
    _, slot = np.unique(x["edge"] * max_pos + x["position"], return_inverse=True)
    num_slots = int(slot.max()) + 1 if num_x else 0
    rows.add(slot, x_index, np.ones(num_x), np.zeros(num_slots), np.ones(num_slots))
    # sum_t x[t, e, m, k] - y[e, m] <= 0: one row per (edge, model, position).
    y_of_x = x["edge"] * num_models + x["model"]
    _, link = np.unique(y_of_x * max_pos + x["position"], return_inverse=True)
    num_links = int(link.max()) + 1 if num_x else 0
    link_y = np.zeros(num_links, dtype=np.int64)
    link_y[link] = y_of_x
    rows.add(
        np.concatenate([link, np.arange(num_links)]),
        np.concatenate([x_index, link_y]),
        np.concatenate([np.ones(num_x), -np.ones(num_links)]),
        np.full(num_links, -np.inf),
        np.zeros(num_links),
    )


def _build_model(problem: CachingProblem, arrays: FleetArrays) -> _CachingModel:
    """Variables: y (E*M), x per (type, edge, model, position), then w (cloud tasks per type)."""
    num_edges, num_models = arrays.token_time_s.shape
    demand = [item for item in problem.demand if item.tasks_per_round > 0]
    horizon = float(problem.horizon_rounds)
    x = _slot_variables(problem, arrays)
    num_y, num_x, num_types = num_edges * num_models, x["type"].size, len(demand)
    x_index = num_y + np.arange(num_x)
    w_index = num_y + num_x + np.arange(num_types)
    rows = _Rows()
    # Every task of the representative round runs somewhere: sum_x + w = D_t.
    counts = np.array([item.tasks_per_round for item in demand], dtype=float)
    rows.add(
        np.concatenate([x["type"], np.arange(num_types)]),
        np.concatenate([x_index, w_index]),
        np.ones(num_x + num_types),
        counts,
        counts,
    )
    _add_slot_rows(rows, x, x_index, num_models)
    # Memory knapsack per edge.
    rows.add(
        np.repeat(np.arange(num_edges), num_models),
        np.arange(num_y),
        np.tile(arrays.model_bytes, num_edges).astype(float),
        np.full(num_edges, -np.inf),
        arrays.memory_bytes.astype(float),
    )
    deploy = problem.deploy_weight * _deploy_cost(problem, arrays).ravel()
    tokens = np.array([max(1, round(item.mean_tokens)) for item in demand], dtype=float)
    cloud_cost = horizon * (arrays.cloud_latency_s + tokens * arrays.cloud_token_time_s)
    num_vars = num_y + num_x + num_types
    return _CachingModel(
        cost=np.concatenate([deploy, horizon * x["cost"], cloud_cost]),
        matrix=rows.matrix(num_vars),
        lower=np.concatenate(rows.lower),
        upper=np.concatenate(rows.upper),
        integrality=np.ones(num_vars),
        variable_upper=np.concatenate([np.ones(num_y + num_x), np.maximum(counts, 1.0)]),
        num_edges=num_edges,
        num_models=num_models,
    )


def _placement_from_y(arrays: FleetArrays, held: np.ndarray) -> Placement:
    return Placement(
        {
            edge_id: frozenset(arrays.model_ids[m] for m in np.flatnonzero(held[row]))
            for row, edge_id in enumerate(arrays.edge_ids)
        }
    )


def _solve(model: _CachingModel, integral: bool, time_limit_s: float) -> np.ndarray:
    result = milp(
        c=model.cost,
        constraints=LinearConstraint(model.matrix, model.lower, model.upper),
        integrality=model.integrality if integral else np.zeros(model.cost.size),
        bounds=Bounds(0, model.variable_upper),
        options={"time_limit": time_limit_s, "mip_rel_gap": MIP_REL_GAP},
    )
    if result.status != 0 or result.x is None:
        raise SolverError(
            f"caching {'MILP' if integral else 'LP'}: {result.message} (status {result.status})"
        )
    return result.x


def solve_caching_exact(problem: CachingProblem, time_limit_s: float = 30.0) -> CachingPlan:
    """Optimal placement for the representative round and deployment cost.

    Raises SolverError if HiGHS does not prove optimality within `time_limit_s`.
    """
    arrays = fleet_arrays(problem.fleet)
    model = _build_model(problem, arrays)
    solution = _solve(model, integral=True, time_limit_s=time_limit_s)
    held = solution[: model.num_edges * model.num_models].reshape(model.num_edges, model.num_models) > 0.5
    return price_placement(problem, _placement_from_y(arrays, held), solver="milp")


def _round_per_edge(arrays: FleetArrays, fractional: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(E, M) bool placement from the LP's fractional y, one knapsack pass per edge.

    Models are taken by fractional value, largest first, while they fit; then models the edge
    already holds fill what memory is left, since keeping them is free and only adds options.
    """
    held = np.zeros_like(current)
    for row in range(fractional.shape[0]):
        free = int(arrays.memory_bytes[row])
        order = np.lexsort((~current[row], -fractional[row]))
        for model in order:
            if fractional[row, model] > 1e-6 and arrays.model_bytes[model] <= free:
                held[row, model] = True
                free -= int(arrays.model_bytes[model])
        for model in np.flatnonzero(current[row] & ~held[row]):
            if arrays.model_bytes[model] <= free:
                held[row, model] = True
                free -= int(arrays.model_bytes[model])
    return held


def solve_caching_fast(problem: CachingProblem, time_limit_s: float = 30.0) -> CachingPlan:
    """Placement from the caching LP relaxation, rounded per edge.

    Raises SolverError if the LP does not solve within `time_limit_s`.
    """
    arrays = fleet_arrays(problem.fleet)
    model = _build_model(problem, arrays)
    solution = _solve(model, integral=False, time_limit_s=time_limit_s)
    fractional = solution[: model.num_edges * model.num_models].reshape(model.num_edges, model.num_models)
    held = _round_per_edge(arrays, fractional, cached_mask(arrays, problem.current))
    return price_placement(problem, _placement_from_y(arrays, held), solver="fast")
