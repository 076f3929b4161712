"""When to move layers while generating (seed 001's dynamic reallocation), as a pure function of measurements.

After every token each node's measured speed (layers per second of compute) is blended into its
capability with `performance_weight` (an exponential moving average: new = (1 - w) old + w measured).
Once `min_tokens` tokens went by since the last change, the split is recomputed from the blended
capabilities; if the current split's predicted cost is more than `threshold` above the best one
(`allocation.imbalance`), the new split is the decision. The threshold is the hysteresis that keeps
noise from moving layers back and forth.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.allocation import Allocation, ModelShape, NodeCapability, Objective, imbalance, optimal_split

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReallocationConfig:
    """Seed 001's three parameters, and the objective the split is recomputed for."""

    enabled: bool = True  # off: the starting split stays
    threshold: float = 0.15  # share of the predicted token time a new split must save
    min_tokens: int = 8  # tokens since the start or the last change before a change may happen
    performance_weight: float = 0.3  # weight of a new measurement in a node's blended speed
    objective: Objective = "latency"  # see pipeline/allocation.py
    min_layers: int = 1  # layers every node keeps

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold {self.threshold} must be in [0, 1)")
        if self.min_tokens < 1:
            raise ValueError(f"min_tokens {self.min_tokens} must be >= 1")
        if not 0 < self.performance_weight <= 1:
            raise ValueError(f"performance_weight {self.performance_weight} must be in (0, 1]")
        if self.min_layers < 0:
            raise ValueError(f"min_layers {self.min_layers} must be >= 0")


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the policy remembers between tokens."""

    capabilities: tuple[NodeCapability, ...]  # blended, in ring order
    allocation: Allocation  # the split in force
    tokens_since_change: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    state: PolicyState  # the state after this token
    imbalance: float  # predicted share of token time the best split would save (0 before min_tokens)
    new_allocation: Allocation | None  # the split to move to, or None to keep the current one


def blend(capabilities: Sequence[NodeCapability], measured_speeds: Mapping[str, float],
          weight: float) -> tuple[NodeCapability, ...]:
    """Each node's speed moved `weight` of the way to its measurement; nodes without one keep theirs."""
    blended = []
    for node in capabilities:
        measured = measured_speeds.get(node.node_id)
        if measured is None or not measured > 0:
            blended.append(node)
            continue
        blended.append(dataclasses.replace(node, speed=(1 - weight) * node.speed + weight * measured))
    return tuple(blended)


def after_token(state: PolicyState, measured_speeds: Mapping[str, float], shape: ModelShape,
                config: ReallocationConfig) -> Decision:
    """Blend one token's measured speeds and decide whether to move layers now."""
    capabilities = blend(state.capabilities, measured_speeds, config.performance_weight)
    tokens = state.tokens_since_change + 1
    state = PolicyState(capabilities, state.allocation, tokens)
    if not config.enabled or tokens < config.min_tokens:
        return Decision(state, 0.0, None)
    share, best = imbalance(state.allocation, capabilities, shape, config.objective, config.min_layers)
    if share <= config.threshold or best.layers == state.allocation.layers:
        return Decision(state, share, None)
    logger.info("pipeline: imbalance %.3f > %.3f after %d tokens: %s -> %s", share, config.threshold, tokens,
                state.allocation.layers, best.layers)
    return Decision(PolicyState(capabilities, best, 0), share, best)


def without_node(state: PolicyState, node_id: str, shape: ModelShape, config: ReallocationConfig) -> PolicyState:
    """The state after `node_id` left: the remaining nodes share all layers (best split for what they can do).

    Raises AllocationError when the remaining nodes cannot hold the model.
    """
    remaining = tuple(node for node in state.capabilities if node.node_id != node_id)
    allocation = optimal_split(remaining, shape, config.objective, config.min_layers)
    return PolicyState(remaining, allocation, 0)
