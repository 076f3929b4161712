"""The scheduler's view of the fleet, built from measured figures: a pure function of plain data.

Per-token time of a model on a node: the node's own learned estimate when it has run that model,
else what other nodes measured for it (brought to this node's speed), else the reference profile
scaled by the node's speed and its host's crowding. Quality per (model, task type): the learned
mean of evaluated answers, else the profile prior anchored to what was measured. Every figure is
made optimistic where it is unmeasured or stale (`fleet_center/estimates.py`), so every healthy edge
and every model gets work until its estimate is real. An edge model may take a task type only if its
planned quality reaches `quality_keep` x the best model's for that type; the cloud always may.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fleet_center.estimates import Estimate, Exploration, planned_quality, planned_time
from fleet_center.scheduling.problem import CloudOption, EdgeSpec, Fleet, ModelSpec

logger = logging.getLogger(__name__)

NUM_TYPES = 5


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """What membership knows about one online edge."""

    node_id: str
    memory_bytes: int
    gflops: float  # best recent speed probe (heartbeats), else the birth's
    queue_depth: int = 0
    host_id: str = ""  # nodes reporting the same host share its cores ("" = a host of its own)
    cores: int = 1


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """A catalog model as profiled on the reference machine."""

    model_id: str
    size_bytes: int
    token_time_s: float  # per generated token on the reference machine
    load_time_s: float
    prior_quality: float  # expected quality before any evaluation (relative between models)


@dataclass(frozen=True, slots=True)
class CostInputs:
    models: tuple[ModelProfile, ...]
    reference_gflops: float  # GFLOPS of the machine the profiles were measured on
    cloud_model: str = ""  # the model the cloud answers with (its measured quality is the cloud's)
    cloud_token_time_s: float = 0.01
    cloud_latency_s: float = 0.3
    cloud_quality: tuple[float, ...] = (0.6,) * NUM_TYPES  # until the cloud model's quality is measured
    quality_keep: float = 0.9  # an edge model must plan at least this share of the best model's quality
    memory_fraction: float = 0.5  # share of an edge's memory the scheduler may fill with models
    mean_task_s: float = 2.0  # how long one queued task is expected to hold an edge
    token_estimates: Mapping[tuple[str, str], Estimate] = field(default_factory=dict)  # (node, model)
    quality_estimates: Mapping[tuple[str, int], Estimate] = field(default_factory=dict)  # (model, task type)
    nodes_per_host: Mapping[str, int] = field(default_factory=dict)  # online nodes of every role per host
    now: float = 0.0  # the clock the estimates' `updated_at` use, seconds
    exploration: Exploration = field(default_factory=Exploration)


def host_speeds(nodes: Iterable[NodeFigures]) -> dict[str, float]:
    """Best probe per node, shared across a host: nodes on one machine have its speed, not their luck."""
    nodes = list(nodes)
    best_on_host: dict[str, float] = {}
    for node in nodes:
        if node.host_id:
            best_on_host[node.host_id] = max(best_on_host.get(node.host_id, 0.0), node.gflops)
    return {node.node_id: best_on_host.get(node.host_id, node.gflops) if node.host_id else node.gflops for node in nodes}


def host_pooled_estimates(nodes: list[NodeFigures], estimates: Mapping[tuple[str, str], Estimate],
                          ) -> dict[tuple[str, str], Estimate]:
    """Each node's estimate, its mean replaced by its host's (nodes on one machine share its cores, so one
    slow sample must not brand one of them slow), its sample count its own (exploration stays per node)."""
    host_of = {node.node_id: node.host_id for node in nodes if node.host_id}
    sums: dict[tuple[str, str], tuple[float, int]] = {}
    for (node_id, model_id), estimate in estimates.items():
        if node_id in host_of:
            total, count = sums.get((host_of[node_id], model_id), (0.0, 0))
            sums[(host_of[node_id], model_id)] = (total + estimate.mean * estimate.samples, count + estimate.samples)
    pooled = dict(estimates)
    for node_id, host_id in host_of.items():
        for (host, model_id), (total, count) in sums.items():
            if host != host_id or count == 0:
                continue
            own = estimates.get((node_id, model_id))
            pooled[(node_id, model_id)] = Estimate(total / count, own.variance if own else 0.0,
                                                   own.samples if own else 0, own.updated_at if own else 0.0)
    return pooled


def host_crowding(node: NodeFigures, nodes_per_host: Mapping[str, int]) -> float:
    """How many nodes share each of the host's cores (>= 1): a quiet-machine profile is this much too fast."""
    sharing = nodes_per_host.get(node.host_id, 1) if node.host_id else 1
    return max(1.0, sharing / max(1, node.cores))


def build_fleet(nodes: list[NodeFigures], inputs: CostInputs) -> Fleet:
    """The scheduling Fleet for these online edges."""
    edges = []
    gflops = host_speeds(nodes)
    speeds = {node_id: max(value, 1e-3) / max(inputs.reference_gflops, 1e-3) for node_id, value in gflops.items()}
    # A model measured on some nodes: what it costs there, brought to reference speed, predicts the
    # others better than the profile does (and keeps unmeasured nodes from looking worse than they are).
    measured_at_reference: dict[str, list[float]] = {}
    for (node_id, model_id), estimate in inputs.token_estimates.items():
        if node_id in speeds:
            measured_at_reference.setdefault(model_id, []).append(estimate.mean * speeds[node_id])
    pooled = host_pooled_estimates(nodes, inputs.token_estimates)
    for node in nodes:
        speed = speeds[node.node_id]
        crowding = host_crowding(node, inputs.nodes_per_host)
        token_time = {}
        for model in inputs.models:
            observed = measured_at_reference.get(model.model_id)
            prior = sum(observed) / len(observed) / speed if observed else model.token_time_s * crowding / speed
            estimate = pooled.get((node.node_id, model.model_id))
            token_time[model.model_id] = planned_time(estimate, prior, inputs.now, inputs.exploration)
        edges.append(EdgeSpec(
            edge_id=node.node_id,
            memory_bytes=int(node.memory_bytes * inputs.memory_fraction),
            token_time_s=token_time,
            load_time_s={model.model_id: model.load_time_s / min(speed, 1.0) for model in inputs.models},
            queue_delay_s=node.queue_depth * inputs.mean_task_s,
        ))
    quality, floor = quality_table(inputs)
    cloud_quality = quality.get(inputs.cloud_model, inputs.cloud_quality) if inputs.quality_estimates else inputs.cloud_quality
    return Fleet(
        edges=tuple(edges),
        models=tuple(ModelSpec(model.model_id, model.size_bytes) for model in inputs.models),
        quality=quality,
        cloud=CloudOption(tuple(max(c, f) for c, f in zip(cloud_quality, floor, strict=True)),
                          inputs.cloud_token_time_s, inputs.cloud_latency_s),
        quality_floor=floor,
    )


def quality_table(inputs: CostInputs) -> tuple[dict[str, tuple[float, ...]], tuple[float, ...]]:
    """Planned quality per model and type, and the floor per type (quality_keep x the best model's mean).

    Profile priors are relative: anchored per type to what was measured, so an unmeasured model is
    judged on the scale the evaluations use, not against a different one.
    """
    top_prior = max((model.prior_quality for model in inputs.models), default=1.0) or 1.0
    relative = {model.model_id: model.prior_quality / top_prior for model in inputs.models}
    planned: dict[str, list[float]] = {model.model_id: [] for model in inputs.models}
    floor = []
    for task_type in range(NUM_TYPES):
        measured = {m: e for (m, t), e in inputs.quality_estimates.items() if t == task_type and m in relative}
        scales = [e.mean / relative[m] for m, e in measured.items() if relative[m] > 0]
        scale = max(scales) if scales else top_prior
        means = []
        for model in inputs.models:
            estimate = measured.get(model.model_id)
            prior = relative[model.model_id] * scale
            means.append(estimate.mean if estimate is not None else prior)
            planned[model.model_id].append(min(1.0, max(0.0, planned_quality(estimate, prior, inputs.now,
                                                                                inputs.exploration))))
        floor.append(min(1.0, max(0.0, inputs.quality_keep * max(means, default=0.0))))
    return {model_id: tuple(values) for model_id, values in planned.items()}, tuple(floor)
