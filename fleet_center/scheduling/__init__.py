"""Pure scheduling decisions of the center: task offloading and model caching.

`Scheduler.offload` places each task of a round on (edge, cached model) or the cloud; `Scheduler.cache`
chooses the models each edge holds. `ExactScheduler` solves MILPs, `FastScheduler` scales to fleets.
"""

from fleet_center.scheduling.costs import evaluate
from fleet_center.scheduling.offloading_exact import SolverError
from fleet_center.scheduling.offloading_fast import FastConfig
from fleet_center.scheduling.problem import (
    NUM_TASK_TYPES,
    CachingPlan,
    CachingProblem,
    CloudOption,
    EdgeSpec,
    Fleet,
    ModelSpec,
    OffloadingPlan,
    OffloadingProblem,
    Placement,
    ProblemError,
    TaskAssignment,
    TaskSpec,
    TypeDemand,
)
from fleet_center.scheduling.solvers import ExactScheduler, FastScheduler, Scheduler, make_scheduler

__all__ = [
    "NUM_TASK_TYPES",
    "CachingPlan",
    "CachingProblem",
    "CloudOption",
    "EdgeSpec",
    "ExactScheduler",
    "FastConfig",
    "FastScheduler",
    "Fleet",
    "ModelSpec",
    "OffloadingPlan",
    "OffloadingProblem",
    "Placement",
    "ProblemError",
    "Scheduler",
    "SolverError",
    "TaskAssignment",
    "TaskSpec",
    "TypeDemand",
    "evaluate",
    "make_scheduler",
]
