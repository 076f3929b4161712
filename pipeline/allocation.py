"""Where a model's layers go: node capabilities -> a contiguous split, by exact dynamic programming (EdgeShard).

Pure functions of plain data: no bus, no model, no clock.

The cost of a stage is its compute (decoder layers, plus the final norm and LM head on the last
stage, in "layer equivalents", divided by the node's speed in layers per second) plus sending its
output on (link latency + bytes / bandwidth). Two objectives, both exact over every split point:
- `latency`: the sum of stage costs, the time of one token. One sequence decodes one token at a
  time, so every stage waits for the others: this is what tokens/s of a single generation follows,
  and what the pipeline uses by default.
- `throughput`: the slowest stage (EdgeShard's pipelined objective), the rate when several
  sequences fill the pipeline at once.
A node's memory budget caps its layers; every node keeps at least `min_layers` (its process stays
in the ring). Node order is given (it is the ring's order): the split only moves boundaries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

Objective = Literal["latency", "throughput"]
OBJECTIVES: tuple[Objective, ...] = ("latency", "throughput")


class AllocationError(ValueError):
    """No split satisfies the constraints (too little memory, too few layers for the nodes)."""


@dataclass(frozen=True, slots=True)
class NodeCapability:
    """What one node brings to the pipeline."""

    node_id: str
    speed: float  # decoder layers one token goes through per second on this node
    memory_bytes: int  # memory budget for layer weights
    link_bytes_per_s: float = 100e6  # bandwidth of the node's link towards the next stage
    link_latency_s: float = 0.001  # one-way delay of a message to the next stage

    def __post_init__(self) -> None:
        if not self.speed > 0 or not math.isfinite(self.speed):
            raise ValueError(f"node {self.node_id}: speed {self.speed} must be a positive number")
        if self.memory_bytes < 0:
            raise ValueError(f"node {self.node_id}: memory_bytes {self.memory_bytes} must be >= 0")
        if not self.link_bytes_per_s > 0:
            raise ValueError(f"node {self.node_id}: link_bytes_per_s must be > 0")
        if self.link_latency_s < 0:
            raise ValueError(f"node {self.node_id}: link_latency_s must be >= 0")


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The few numbers of a model the allocator needs."""

    num_layers: int  # decoder layers to place
    layer_bytes: int  # weight bytes of one decoder layer
    activation_bytes: int  # bytes one token's hidden state takes between stages
    head_work: float = 0.0  # final norm + LM head on the last stage, in decoder-layer equivalents

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"num_layers {self.num_layers} must be >= 1")
        if self.layer_bytes < 0 or self.activation_bytes < 0 or self.head_work < 0:
            raise ValueError("layer_bytes, activation_bytes and head_work must be >= 0")


def llama_shape(num_layers: int, hidden_size: int, intermediate_size: int, kv_size: int, vocab_size: int,
                bytes_per_value: int = 4) -> ModelShape:
    """The shape of a Llama: a layer's weights (attention q/k/v/o + SwiGLU MLP) and the head's size in layers."""
    layer_parameters = 2 * hidden_size * hidden_size + 2 * hidden_size * kv_size + 3 * hidden_size * intermediate_size
    return ModelShape(num_layers, layer_parameters * bytes_per_value, hidden_size * bytes_per_value,
                      head_work=vocab_size * hidden_size / layer_parameters)


@dataclass(frozen=True, slots=True)
class Allocation:
    """Layer counts per node in ring order, like seed 001's `allocation_list`; node i runs ranges()[i]."""

    node_ids: tuple[str, ...]
    layers: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.node_ids) != len(self.layers) or not self.node_ids:
            raise ValueError(f"{len(self.node_ids)} nodes but {len(self.layers)} layer counts")
        if len(set(self.node_ids)) != len(self.node_ids):
            raise ValueError(f"node ids repeat: {self.node_ids}")
        if any(count < 0 for count in self.layers):
            raise ValueError(f"layer counts must be >= 0: {self.layers}")

    @property
    def num_layers(self) -> int:
        return sum(self.layers)

    def ranges(self) -> tuple[tuple[int, int], ...]:
        """[start, end) of each node, in ring order (empty ranges have start == end)."""
        bounds, start = [], 0
        for count in self.layers:
            bounds.append((start, start + count))
            start += count
        return tuple(bounds)

    def range_of(self, node_id: str) -> tuple[int, int]:
        return self.ranges()[self.node_ids.index(node_id)]

    def active(self) -> tuple[str, ...]:
        """Nodes holding at least one layer, in ring order."""
        return tuple(node for node, count in zip(self.node_ids, self.layers, strict=True) if count)


def even_split(node_ids: Sequence[str], num_layers: int) -> Allocation:
    """Layers shared as evenly as possible, the first nodes taking the remainder."""
    if num_layers < len(node_ids):
        raise AllocationError(f"{num_layers} layers cannot give each of {len(node_ids)} nodes one")
    base, extra = divmod(num_layers, len(node_ids))
    return Allocation(tuple(node_ids), tuple(base + (1 if index < extra else 0) for index in range(len(node_ids))))


def parse_allocation(node_ids: Sequence[str], layers: Sequence[int], num_layers: int) -> Allocation:
    """A user's allocation list checked against the model. Raises AllocationError naming the problem."""
    try:
        allocation = Allocation(tuple(node_ids), tuple(int(count) for count in layers))
    except ValueError as error:
        raise AllocationError(str(error)) from error
    if allocation.num_layers != num_layers:
        raise AllocationError(f"allocation {list(layers)} places {allocation.num_layers} layers, the model has {num_layers}")
    return allocation


def max_layers(node: NodeCapability, shape: ModelShape) -> int:
    """Most layers the node's memory budget holds."""
    if shape.layer_bytes == 0:
        return shape.num_layers
    return min(shape.num_layers, node.memory_bytes // shape.layer_bytes)


def stage_cost(node: NodeCapability, layers: int, shape: ModelShape, *, last: bool) -> float:
    """Seconds one token spends on this node and on its way out: compute + transfer (0 for an empty stage)."""
    if layers == 0:
        return 0.0
    work = layers + (shape.head_work if last else 0.0)
    out_bytes = 8 if last else shape.activation_bytes  # the last stage sends only the token id back
    return work / node.speed + node.link_latency_s + out_bytes / node.link_bytes_per_s


def stage_costs(allocation: Allocation, nodes: Sequence[NodeCapability], shape: ModelShape) -> tuple[float, ...]:
    by_id = {node.node_id: node for node in nodes}
    last_active = max((index for index, count in enumerate(allocation.layers) if count), default=-1)
    return tuple(stage_cost(by_id[node], count, shape, last=index == last_active)
                 for index, (node, count) in enumerate(zip(allocation.node_ids, allocation.layers, strict=True)))


def cost(allocation: Allocation, nodes: Sequence[NodeCapability], shape: ModelShape,
         objective: Objective = "latency") -> float:
    """Predicted seconds per token (`latency`) or of the slowest stage (`throughput`)."""
    costs = stage_costs(allocation, nodes, shape)
    return sum(costs) if objective == "latency" else max(costs)


def optimal_split(nodes: Sequence[NodeCapability], shape: ModelShape, objective: Objective = "latency",
                  min_layers: int = 1) -> Allocation:
    """The exact best contiguous split over `nodes` in the given order (dynamic programming over split points).

    best[i][l]: the objective over the first i nodes holding the first l layers, where node i - 1 is
    not the last stage; the last node is closed separately because it also carries the head. With
    `min_layers` 0 a node may be left out. O(N L^2). Raises AllocationError when nothing fits.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} must be one of {OBJECTIVES}")
    if not nodes:
        raise AllocationError("no nodes to place layers on")
    total = shape.num_layers
    combine = (lambda a, b: a + b) if objective == "latency" else max
    infinity = math.inf
    count = len(nodes)
    best = [[infinity] * (total + 1) for _ in range(count + 1)]
    choice = [[0] * (total + 1) for _ in range(count + 1)]
    best[0][0] = 0.0
    for index, node in enumerate(nodes):
        limit = max_layers(node, shape)
        is_last_node = index == count - 1
        for placed in range(total + 1):
            if best[index][placed] == infinity:
                continue
            for take in range(min_layers, min(limit, total - placed) + 1):
                reached = placed + take
                if is_last_node and reached != total:
                    continue
                # the last stage is the last node holding layers: the last node, or an earlier one
                # when every later node is left out (min_layers 0)
                last = reached == total
                value = combine(best[index][placed], stage_cost(node, take, shape, last=last))
                if value < best[index + 1][reached] - 1e-15:
                    best[index + 1][reached], choice[index + 1][reached] = value, take
    if best[count][total] == infinity:
        budget = [max_layers(node, shape) for node in nodes]
        raise AllocationError(f"{total} layers do not fit nodes {[n.node_id for n in nodes]} "
                              f"(at most {budget} layers each, at least {min_layers} each)")
    layers, reached = [], total
    for index in range(count, 0, -1):
        take = choice[index][reached]
        layers.append(take)
        reached -= take
    return Allocation(tuple(node.node_id for node in nodes), tuple(reversed(layers)))


def imbalance(current: Allocation, nodes: Sequence[NodeCapability], shape: ModelShape,
              objective: Objective = "latency", min_layers: int = 1) -> tuple[float, Allocation]:
    """(share of the current cost the best split would save, that split): 0 when `current` is already best."""
    best = optimal_split(nodes, shape, objective, min_layers)
    now = cost(current, nodes, shape, objective)
    if now <= 0:
        return 0.0, best
    return max(0.0, 1.0 - cost(best, nodes, shape, objective) / now), best
