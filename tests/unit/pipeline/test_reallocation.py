"""The dynamic reallocation policy: blending, minimum tokens, threshold, node loss."""

from __future__ import annotations

import pytest

from pipeline.allocation import AllocationError, ModelShape, NodeCapability, even_split
from pipeline.reallocation import PolicyState, ReallocationConfig, after_token, blend, without_node

SHAPE = ModelShape(num_layers=30, layer_bytes=1, activation_bytes=2304, head_work=8.0)
NODES = ("a", "b", "c")


def start_state() -> PolicyState:
    capabilities = tuple(NodeCapability(node, 1000.0, 24) for node in NODES)
    return PolicyState(capabilities, even_split(NODES, 30))


def run_tokens(state: PolicyState, speeds: dict[str, float], count: int, config: ReallocationConfig) -> list:
    decisions = []
    for _ in range(count):
        decision = after_token(state, speeds, SHAPE, config)
        decisions.append(decision)
        state = decision.state
    return decisions


def test_blend_moves_speed_by_the_performance_weight() -> None:
    blended = blend([NodeCapability("a", 1000.0, 1)], {"a": 500.0}, 0.3)
    assert blended[0].speed == pytest.approx(850.0)


def test_blend_keeps_a_node_without_measurement() -> None:
    assert blend([NodeCapability("a", 1000.0, 1)], {}, 0.3)[0].speed == 1000.0


def test_nothing_moves_before_min_tokens() -> None:
    decisions = run_tokens(start_state(), {"a": 1000.0, "b": 500.0, "c": 250.0}, 7, ReallocationConfig())
    assert all(decision.new_allocation is None for decision in decisions)


def test_uneven_speeds_move_layers_at_min_tokens() -> None:
    decisions = run_tokens(start_state(), {"a": 1000.0, "b": 500.0, "c": 250.0}, 8, ReallocationConfig())
    moved = decisions[-1].new_allocation
    assert moved is not None and moved.layers[0] > 10 and moved.layers[2] < 10


def test_equal_speeds_never_move_layers() -> None:
    decisions = run_tokens(start_state(), {"a": 1000.0, "b": 1000.0, "c": 1000.0}, 40, ReallocationConfig())
    assert all(decision.new_allocation is None for decision in decisions)


def test_small_imbalance_below_threshold_keeps_the_split() -> None:
    decisions = run_tokens(start_state(), {"a": 1000.0, "b": 950.0, "c": 900.0}, 20, ReallocationConfig(threshold=0.5))
    assert all(decision.new_allocation is None for decision in decisions)


def test_disabled_policy_never_moves() -> None:
    decisions = run_tokens(start_state(), {"a": 1000.0, "b": 100.0, "c": 100.0}, 20, ReallocationConfig(enabled=False))
    assert all(decision.new_allocation is None for decision in decisions)


def test_a_change_restarts_the_token_count() -> None:
    decisions = run_tokens(start_state(), {"a": 1000.0, "b": 500.0, "c": 250.0}, 8, ReallocationConfig())
    assert decisions[-1].state.tokens_since_change == 0


def test_lost_node_layers_go_to_the_rest() -> None:
    state = without_node(start_state(), "b", SHAPE, ReallocationConfig())
    assert state.allocation.node_ids == ("a", "c") and state.allocation.num_layers == 30


def test_lost_node_without_room_left_is_an_allocation_error() -> None:
    small = PolicyState(tuple(NodeCapability(node, 1000.0, 12) for node in NODES), even_split(NODES, 30))
    with pytest.raises(AllocationError):
        without_node(small, "b", SHAPE, ReallocationConfig())


def test_bad_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="performance_weight"):
        ReallocationConfig(performance_weight=0.0)
