"""The scheduler's view of the fleet, built from measured figures: a pure function of plain data.

Per-token time of a model on a node: the node's own measured average when it has run that model,
else what other nodes measured for it, else the reference profile, scaled by the node's measured GFLOPS. Quality per model and task type:
the running mean of evaluated answers, else a prior. The cloud is the full model on a big machine:
best quality, plus a fixed network and admission latency per task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from fleet_center.scheduling.problem import CloudOption, EdgeSpec, Fleet, ModelSpec

logger = logging.getLogger(__name__)

NUM_TYPES = 5


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """What membership knows about one online edge."""

    node_id: str
    memory_bytes: int
    gflops: float
    queue_depth: int = 0


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """A catalog model as profiled on the reference machine."""

    model_id: str
    size_bytes: int
    token_time_s: float  # per generated token on the reference machine
    load_time_s: float
    prior_quality: float  # expected quality before any evaluation


@dataclass(frozen=True, slots=True)
class CostInputs:
    models: tuple[ModelProfile, ...]
    reference_gflops: float  # GFLOPS of the machine the profiles were measured on
    cloud_token_time_s: float = 0.01
    cloud_latency_s: float = 0.3
    cloud_quality: tuple[float, ...] = (0.6,) * NUM_TYPES
    quality_floor: tuple[float, ...] = (0.0,) * NUM_TYPES
    memory_fraction: float = 0.5  # share of an edge's memory the scheduler may fill with models
    mean_task_s: float = 2.0  # how long one queued task is expected to hold an edge
    measured_token_time_s: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (node, model)
    measured_quality: Mapping[tuple[str, int], float] = field(default_factory=dict)  # (model, task type)


def build_fleet(nodes: list[NodeFigures], inputs: CostInputs) -> Fleet:
    """The scheduling Fleet for these online edges."""
    edges = []
    speeds = {node.node_id: max(node.gflops, 1e-3) / max(inputs.reference_gflops, 1e-3) for node in nodes}
    # A model measured on some nodes: what it costs there, brought to reference speed, predicts the
    # others better than the profile does (and keeps unmeasured nodes from looking worse than they are).
    measured_at_reference: dict[str, list[float]] = {}
    for (node_id, model_id), seconds in inputs.measured_token_time_s.items():
        if node_id in speeds:
            measured_at_reference.setdefault(model_id, []).append(seconds * speeds[node_id])
    for node in nodes:
        speed = speeds[node.node_id]
        token_time = {}
        for model in inputs.models:
            observed = measured_at_reference.get(model.model_id)
            estimate = (sum(observed) / len(observed) if observed else model.token_time_s) / speed
            token_time[model.model_id] = inputs.measured_token_time_s.get((node.node_id, model.model_id), estimate)
        edges.append(EdgeSpec(
            edge_id=node.node_id,
            memory_bytes=int(node.memory_bytes * inputs.memory_fraction),
            token_time_s=token_time,
            load_time_s={model.model_id: model.load_time_s / min(speed, 1.0) for model in inputs.models},
            queue_delay_s=node.queue_depth * inputs.mean_task_s,
        ))
    quality = {
        model.model_id: tuple(
            min(1.0, max(0.0, inputs.measured_quality.get((model.model_id, t), model.prior_quality)))
            for t in range(NUM_TYPES)
        )
        for model in inputs.models
    }
    return Fleet(
        edges=tuple(edges),
        models=tuple(ModelSpec(model.model_id, model.size_bytes) for model in inputs.models),
        quality=quality,
        cloud=CloudOption(inputs.cloud_quality, inputs.cloud_token_time_s, inputs.cloud_latency_s),
        quality_floor=inputs.quality_floor,
    )


def running_means(samples: list[tuple[tuple[str, int] | tuple[str, str], float]]) -> dict:
    """Mean value per key over (key, value) samples."""
    sums: dict = {}
    for key, value in samples:
        total, count = sums.get(key, (0.0, 0))
        sums[key] = (total + value, count + 1)
    return {key: total / count for key, (total, count) in sums.items()}
