"""Plain-data inputs and outputs of the center's two decisions: task offloading and model caching.

Everything here is a frozen dataclass validated when created, so a solver can trust its input.
Times are seconds, sizes are bytes, qualities are expected scores in [0, 1] per task type.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

NUM_TASK_TYPES = 5  # 0 TC, 1 NER, 2 QA, 3 TS (zh->en), 4 SG


class ProblemError(ValueError):
    """An offloading or caching problem is malformed (the message names the field)."""


def _check_per_type(values: tuple[float, ...], name: str) -> None:
    if len(values) != NUM_TASK_TYPES:
        raise ProblemError(f"{name}: expected {NUM_TASK_TYPES} values (one per task type), got {len(values)}")
    for value in values:
        if not 0.0 <= value <= 1.0:
            raise ProblemError(f"{name}: quality {value!r} outside [0, 1]")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A deployable model variant."""

    model_id: str
    size_bytes: int  # memory it occupies on an edge once cached, bytes

    def __post_init__(self) -> None:
        if self.size_bytes <= 0:
            raise ProblemError(f"model {self.model_id}: size_bytes must be positive")


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    """What the center knows about one edge node (from its birth, profiles and heartbeats)."""

    edge_id: str
    memory_bytes: int  # memory available for cached models, bytes
    token_time_s: Mapping[str, float]  # model id -> seconds per token here; a model absent cannot run here
    load_time_s: Mapping[str, float] = field(
        default_factory=dict
    )  # model id -> deploy (fetch + load) seconds
    queue_delay_s: float = 0.0  # work already queued (queue depth x mean task time), seconds
    link_latency_s: float = 0.0  # center <-> edge round trip for dispatch and result, seconds

    def __post_init__(self) -> None:
        if self.memory_bytes < 0:
            raise ProblemError(f"edge {self.edge_id}: memory_bytes must be >= 0")
        if self.queue_delay_s < 0 or self.link_latency_s < 0:
            raise ProblemError(f"edge {self.edge_id}: queue_delay_s and link_latency_s must be >= 0")
        for model_id, seconds in self.token_time_s.items():
            if not seconds > 0:
                raise ProblemError(f"edge {self.edge_id}: token_time_s[{model_id}] must be positive")
        for model_id, seconds in self.load_time_s.items():
            if seconds < 0:
                raise ProblemError(f"edge {self.edge_id}: load_time_s[{model_id}] must be >= 0")


@dataclass(frozen=True, slots=True)
class CloudOption:
    """The cloud: high quality, higher latency, and enough workers that its tasks do not queue."""

    quality: tuple[float, ...]  # expected quality per task type
    token_time_s: float  # seconds per token
    latency_s: float  # fixed cost per task: WAN round trip plus admission, seconds

    def __post_init__(self) -> None:
        _check_per_type(self.quality, "cloud.quality")
        if self.token_time_s < 0 or self.latency_s < 0:
            raise ProblemError("cloud: token_time_s and latency_s must be >= 0")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task of a round as the scheduler sees it."""

    task_id: str
    task_type: int  # 0 TC, 1 NER, 2 QA, 3 TS, 4 SG
    expected_tokens: int  # tokens the model is expected to process/generate for it

    def __post_init__(self) -> None:
        if not 0 <= self.task_type < NUM_TASK_TYPES:
            raise ProblemError(f"task {self.task_id}: task_type {self.task_type} outside 0..4")
        if self.expected_tokens <= 0:
            raise ProblemError(f"task {self.task_id}: expected_tokens must be positive")


@dataclass(frozen=True, slots=True)
class Placement:
    """Which models each edge holds; an edge absent holds nothing."""

    models_by_edge: Mapping[str, frozenset[str]]

    def models_on(self, edge_id: str) -> frozenset[str]:
        return self.models_by_edge.get(edge_id, frozenset())


@dataclass(frozen=True, slots=True)
class Fleet:
    """The parts both decisions share: nodes, models, the quality table and the floors."""

    edges: tuple[EdgeSpec, ...]
    models: tuple[ModelSpec, ...]
    quality: Mapping[str, tuple[float, ...]]  # model id -> expected quality per task type (from evaluations)
    cloud: CloudOption
    # Minimum expected quality per task type for an edge model to take the task. The cloud is the
    # quality ceiling and always allowed, so every task has a feasible home.
    quality_floor: tuple[float, ...] = (0.0,) * NUM_TASK_TYPES

    def __post_init__(self) -> None:
        edge_ids = [edge.edge_id for edge in self.edges]
        if len(set(edge_ids)) != len(edge_ids):
            raise ProblemError("edges: duplicate edge_id")
        model_ids = [model.model_id for model in self.models]
        if len(set(model_ids)) != len(model_ids):
            raise ProblemError("models: duplicate model_id")
        _check_per_type(self.quality_floor, "quality_floor")
        for model_id in model_ids:
            if model_id not in self.quality:
                raise ProblemError(f"quality: no row for model {model_id}")
            _check_per_type(self.quality[model_id], f"quality[{model_id}]")
        known = set(model_ids)
        for edge in self.edges:
            unknown = (set(edge.token_time_s) | set(edge.load_time_s)) - known
            if unknown:
                raise ProblemError(f"edge {edge.edge_id}: unknown models {sorted(unknown)}")

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(model.model_id for model in self.models)

    def check_placement(self, placement: Placement, name: str) -> None:
        """Raise ProblemError if `placement` names an unknown edge or model or overfills an edge."""
        sizes = {model.model_id: model.size_bytes for model in self.models}
        memory = {edge.edge_id: edge.memory_bytes for edge in self.edges}
        for edge_id, model_ids in placement.models_by_edge.items():
            if edge_id not in memory:
                raise ProblemError(f"{name}: unknown edge {edge_id}")
            unknown = set(model_ids) - set(sizes)
            if unknown:
                raise ProblemError(f"{name}: edge {edge_id} holds unknown models {sorted(unknown)}")
            used = sum(sizes[model_id] for model_id in model_ids)
            if used > memory[edge_id]:
                raise ProblemError(f"{name}: edge {edge_id} holds {used} bytes over its {memory[edge_id]}")


@dataclass(frozen=True, slots=True)
class OffloadingProblem:
    """One round: place every task on (edge, cached model) or the cloud."""

    fleet: Fleet
    tasks: tuple[TaskSpec, ...]
    placement: Placement  # models cached on each edge now

    def __post_init__(self) -> None:
        task_ids = [task.task_id for task in self.tasks]
        if len(set(task_ids)) != len(task_ids):
            raise ProblemError("tasks: duplicate task_id")
        self.fleet.check_placement(self.placement, "placement")


@dataclass(frozen=True, slots=True)
class TypeDemand:
    """Recent demand for one task type, averaged per round."""

    task_type: int
    tasks_per_round: int
    mean_tokens: float  # expected tokens per task of this type

    def __post_init__(self) -> None:
        if not 0 <= self.task_type < NUM_TASK_TYPES:
            raise ProblemError(f"demand: task_type {self.task_type} outside 0..4")
        if self.tasks_per_round < 0 or self.mean_tokens <= 0:
            raise ProblemError(f"demand[{self.task_type}]: tasks_per_round >= 0 and mean_tokens > 0 required")


@dataclass(frozen=True, slots=True)
class CachingProblem:
    """A caching round: choose the models each edge holds for the next `horizon_rounds` rounds."""

    fleet: Fleet
    demand: tuple[TypeDemand, ...]
    current: Placement  # what the edges hold now; keeping a model costs nothing
    horizon_rounds: int = 20  # offloading rounds the new placement serves before the next caching round
    deploy_weight: float = 1.0  # latency seconds charged per second of deployment (fetch + load)

    def __post_init__(self) -> None:
        types = [item.task_type for item in self.demand]
        if len(set(types)) != len(types):
            raise ProblemError("demand: task types repeat")
        if self.horizon_rounds <= 0 or self.deploy_weight < 0:
            raise ProblemError("horizon_rounds must be positive and deploy_weight >= 0")
        self.fleet.check_placement(self.current, "current")


@dataclass(frozen=True, slots=True)
class TaskAssignment:
    """Where one task runs, in which order, and its predicted latency."""

    task_id: str
    edge_id: str | None  # None: the cloud
    model_id: str | None  # None: the cloud's model
    order: int  # 0-based position in the edge's run order; 0 on the cloud
    latency_s: float  # predicted time from dispatch to result, seconds


@dataclass(frozen=True, slots=True)
class OffloadingPlan:
    assignments: tuple[TaskAssignment, ...]  # in the problem's task order
    total_latency_s: float  # sum of predicted task latencies, the minimised objective
    solver: str

    def tasks_for(self, edge_id: str) -> tuple[TaskAssignment, ...]:
        """The tasks dispatched to `edge_id`, in run order."""
        mine = [item for item in self.assignments if item.edge_id == edge_id]
        return tuple(sorted(mine, key=lambda item: item.order))

    @property
    def cloud_task_ids(self) -> tuple[str, ...]:
        return tuple(item.task_id for item in self.assignments if item.edge_id is None)


@dataclass(frozen=True, slots=True)
class CachingPlan:
    placement: Placement
    deployments: tuple[tuple[str, str], ...]  # (edge id, model id) to fetch and load
    evictions: tuple[tuple[str, str], ...]  # (edge id, model id) to unload
    round_latency_s: float  # predicted total latency of one representative round under the placement
    deploy_cost_s: float  # summed deployment seconds of `deployments`
    objective_s: float  # horizon_rounds * round_latency_s + deploy_weight * deploy_cost_s
    solver: str
