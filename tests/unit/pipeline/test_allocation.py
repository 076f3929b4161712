"""The pipeline allocator: exact split against brute force, memory caps, objectives, user lists."""

from __future__ import annotations

import itertools
import random

import pytest

from pipeline.allocation import (
    Allocation,
    AllocationError,
    ModelShape,
    NodeCapability,
    cost,
    even_split,
    imbalance,
    llama_shape,
    optimal_split,
    parse_allocation,
)

SHAPE = ModelShape(num_layers=12, layer_bytes=100, activation_bytes=2304, head_work=3.0)


def nodes(*speeds: float, memory: int = 10_000) -> list[NodeCapability]:
    return [NodeCapability(f"n{index}", speed, memory) for index, speed in enumerate(speeds)]


def brute_force(capabilities: list[NodeCapability], shape: ModelShape, objective: str, min_layers: int) -> float:
    best = float("inf")
    for counts in itertools.product(range(shape.num_layers + 1), repeat=len(capabilities)):
        if sum(counts) != shape.num_layers or min(counts) < min_layers:
            continue
        if any(count * shape.layer_bytes > node.memory_bytes for count, node in zip(counts, capabilities, strict=True)):
            continue
        allocation = Allocation(tuple(n.node_id for n in capabilities), counts)
        best = min(best, cost(allocation, capabilities, shape, objective))  # type: ignore[arg-type]
    return best


@pytest.mark.parametrize("objective", ["latency", "throughput"])
@pytest.mark.parametrize("min_layers", [0, 1])
def test_split_matches_brute_force_on_random_fleets(objective: str, min_layers: int) -> None:
    generator = random.Random(7)
    for _ in range(25):
        capabilities = [NodeCapability(f"n{i}", generator.uniform(50, 2000), generator.choice([400, 700, 5000]),
                                       generator.uniform(1e5, 1e8), generator.uniform(0, 0.01)) for i in range(3)]
        try:
            allocation = optimal_split(capabilities, SHAPE, objective, min_layers)  # type: ignore[arg-type]
        except AllocationError:
            assert brute_force(capabilities, SHAPE, objective, min_layers) == float("inf")
            continue
        assert cost(allocation, capabilities, SHAPE, objective) == pytest.approx(  # type: ignore[arg-type]
            brute_force(capabilities, SHAPE, objective, min_layers))


def test_throughput_split_follows_speed_ratio() -> None:
    shape = ModelShape(num_layers=28, layer_bytes=1, activation_bytes=0)
    allocation = optimal_split(nodes(400, 200, 100), shape, "throughput")
    assert allocation.layers == (16, 8, 4)


def test_latency_split_fills_the_fastest_node_up_to_its_memory() -> None:
    capabilities = [NodeCapability("slow", 100, 10_000), NodeCapability("fast", 400, 800)]
    assert optimal_split(capabilities, SHAPE, "latency").layers == (4, 8)


def test_every_node_keeps_min_layers() -> None:
    assert optimal_split(nodes(1000, 1, 1), SHAPE, "latency", min_layers=1).layers == (10, 1, 1)


def test_a_node_may_be_left_out_with_min_layers_zero() -> None:
    assert optimal_split(nodes(1000, 1, 1), SHAPE, "latency", min_layers=0).layers == (12, 0, 0)


def test_model_too_big_for_the_nodes_is_an_allocation_error() -> None:
    with pytest.raises(AllocationError, match="do not fit"):
        optimal_split(nodes(100, 100, memory=500), SHAPE)


def test_even_split_gives_the_remainder_to_the_first_nodes() -> None:
    assert even_split(["a", "b", "c"], 30).layers == (10, 10, 10)
    assert even_split(["a", "b", "c"], 31).layers == (11, 10, 10)


def test_ranges_are_contiguous_in_ring_order() -> None:
    assert Allocation(("a", "b", "c"), (5, 3, 4)).ranges() == ((0, 5), (5, 8), (8, 12))


def test_allocation_list_must_place_every_layer() -> None:
    with pytest.raises(AllocationError, match="places 11 layers"):
        parse_allocation(["a", "b"], [6, 5], 12)


def test_allocation_list_with_repeated_node_is_refused() -> None:
    with pytest.raises(AllocationError, match="repeat"):
        parse_allocation(["a", "a"], [6, 6], 12)


def test_imbalance_is_zero_for_the_best_split() -> None:
    capabilities = nodes(300, 200, 100)
    best = optimal_split(capabilities, SHAPE)
    assert imbalance(best, capabilities, SHAPE)[0] == pytest.approx(0.0)


def test_imbalance_is_the_share_the_best_split_saves() -> None:
    capabilities = nodes(400, 100, 100, memory=600)
    even = even_split(["n0", "n1", "n2"], 12)
    share, best = imbalance(even, capabilities, SHAPE)
    assert share == pytest.approx(1 - cost(best, capabilities, SHAPE) / cost(even, capabilities, SHAPE))
    assert share > 0.1 and best.layers != even.layers


def test_smollm2_head_is_worth_about_eight_layers() -> None:
    shape = llama_shape(30, 576, 1536, 192, 49152)
    assert 7.5 < shape.head_work < 8.5
    assert shape.activation_bytes == 2304


def test_nonpositive_speed_is_refused() -> None:
    with pytest.raises(ValueError, match="speed"):
        NodeCapability("a", 0.0, 1)
