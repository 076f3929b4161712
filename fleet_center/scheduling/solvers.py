"""The one interface the round loop calls for both decisions, with an exact and a fast implementation."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from fleet_center.scheduling.caching import solve_caching_exact, solve_caching_fast
from fleet_center.scheduling.offloading_exact import solve_offloading_exact
from fleet_center.scheduling.offloading_fast import FastConfig, solve_offloading_fast
from fleet_center.scheduling.problem import CachingPlan, CachingProblem, OffloadingPlan, OffloadingProblem

logger = logging.getLogger(__name__)


class Scheduler(Protocol):
    """Decides task offloading every round and model caching every caching round."""

    name: str

    def offload(self, problem: OffloadingProblem) -> OffloadingPlan: ...

    def cache(self, problem: CachingProblem) -> CachingPlan: ...


@dataclass(frozen=True, slots=True)
class ExactScheduler:
    """MILP optima (HiGHS); for small instances, tests and benchmarks. Raises SolverError on timeout."""

    time_limit_s: float = 30.0  # per solve, seconds
    name: str = "milp"

    def offload(self, problem: OffloadingProblem) -> OffloadingPlan:
        return solve_offloading_exact(problem, self.time_limit_s)

    def cache(self, problem: CachingProblem) -> CachingPlan:
        return solve_caching_exact(problem, self.time_limit_s)


@dataclass(frozen=True, slots=True)
class FastScheduler:
    """Fleet-sized: sparse assignment for offloading, LP rounding for caching."""

    offloading: FastConfig = field(default_factory=FastConfig)
    lp_time_limit_s: float = 30.0  # caching LP relaxation limit, seconds
    name: str = "fast"

    def offload(self, problem: OffloadingProblem) -> OffloadingPlan:
        return solve_offloading_fast(problem, self.offloading)

    def cache(self, problem: CachingProblem) -> CachingPlan:
        return solve_caching_fast(problem, self.lp_time_limit_s)


def make_scheduler(name: str) -> Scheduler:
    """The scheduler called `name` ("fast" or "milp"). Raises ValueError for any other name."""
    if name == "fast":
        return FastScheduler()
    if name == "milp":
        return ExactScheduler()
    raise ValueError(f"unknown scheduler {name!r}: expected 'fast' or 'milp'")
