"""Stage assignments and KV moves between splits (pure)."""

from __future__ import annotations

from pipeline.allocation import Allocation
from pipeline.plan import KvMove, assignments, kv_moves

NODES = ("a", "b", "c")


def test_moving_a_boundary_moves_exactly_the_layers_that_change_node() -> None:
    moves = kv_moves(Allocation(NODES, (10, 10, 10)), Allocation(NODES, (5, 1, 24)))
    # old a [0, 10), b [10, 20), c [20, 30); new a [0, 5), b [5, 6), c [6, 30)
    assert set(moves) == {KvMove("a", "b", 5, 6), KvMove("a", "c", 6, 10), KvMove("b", "c", 10, 20)}


def test_same_split_moves_nothing() -> None:
    assert kv_moves(Allocation(NODES, (4, 4, 4)), Allocation(NODES, (4, 4, 4))) == ()


def test_a_lost_node_sends_nothing() -> None:
    moves = kv_moves(Allocation(("a", "c"), (6, 6)), Allocation(("a", "c"), (4, 8)))
    assert moves == (KvMove("a", "c", 4, 6),)


def test_assignments_link_the_ring_and_name_kv_both_ways() -> None:
    old, new = Allocation(NODES, (10, 10, 10)), Allocation(NODES, (5, 1, 24))
    plan = assignments(new, "r", 2, "m", reset=False, moves=kv_moves(old, new))
    assert (plan["a"].predecessor, plan["a"].successor, plan["a"].first, plan["a"].last) == ("c", "b", True, False)
    assert (plan["c"].successor, plan["c"].last) == ("a", True)
    assert [(p.node_id, p.start, p.end) for p in plan["a"].kv_sends] == [("b", 5, 6), ("c", 6, 10)]
    assert [(p.node_id, p.start, p.end) for p in plan["c"].kv_expected] == [("a", 6, 10), ("b", 10, 20)]
    assert (plan["c"].start, plan["c"].end) == (6, 30)


def test_nodes_without_layers_get_no_assignment() -> None:
    plan = assignments(Allocation(NODES, (6, 0, 6)), "r", 1, "m", reset=True)
    assert set(plan) == {"a", "c"} and plan["a"].successor == "c"
