"""The pure eviction decision: which idle models make room for one more."""

from __future__ import annotations

from edge_node.eviction_policy import ModelRecord, choose_victims


def record(
    model_id: str,
    size_bytes: int,
    last_used_at: float,
    *,
    pinned: bool = False,
    in_use: int = 0,
    loading: bool = False,
    unloading: bool = False,
) -> ModelRecord:
    return ModelRecord(
        model_id=model_id,
        size_bytes=size_bytes,
        loaded_at=None if loading else 0.0,
        last_used_at=last_used_at,
        expires_at=None,
        pinned=pinned,
        in_use=in_use,
        loading=loading,
        unloading=unloading,
    )


def test_no_victims_when_the_model_fits() -> None:
    assert choose_victims([record("a", 40, 1.0)], needed_bytes=60, budget_bytes=100, max_models=3) == ()


def test_least_recently_used_idle_model_is_evicted_first() -> None:
    records = [record("new", 40, 5.0), record("old", 40, 1.0)]
    assert choose_victims(records, needed_bytes=40, budget_bytes=100, max_models=3) == ("old",)


def test_only_as_many_models_as_needed_are_evicted() -> None:
    records = [record("a", 30, 1.0), record("b", 30, 2.0), record("c", 30, 3.0)]
    assert choose_victims(records, needed_bytes=50, budget_bytes=100, max_models=5) == ("a", "b")


def test_small_old_model_is_spared_when_a_larger_eviction_suffices_alone() -> None:
    records = [record("small", 10, 1.0), record("large", 60, 2.0), record("kept", 30, 3.0)]
    assert choose_victims(records, needed_bytes=60, budget_bytes=100, max_models=5) == ("large",)


def test_pinned_model_is_never_a_victim() -> None:
    records = [record("pinned", 50, 1.0, pinned=True), record("idle", 50, 2.0)]
    assert choose_victims(records, needed_bytes=50, budget_bytes=100, max_models=3) == ("idle",)


def test_model_in_use_is_never_a_victim() -> None:
    records = [record("busy", 50, 1.0, in_use=1), record("idle", 50, 2.0)]
    assert choose_victims(records, needed_bytes=50, budget_bytes=100, max_models=3) == ("idle",)


def test_loading_model_is_never_a_victim_but_counts_against_the_budget() -> None:
    records = [record("loading", 60, 1.0, loading=True)]
    assert choose_victims(records, needed_bytes=50, budget_bytes=100, max_models=3) is None


def test_none_when_nothing_evictable_makes_room() -> None:
    records = [record("pinned", 50, 1.0, pinned=True), record("busy", 40, 2.0, in_use=2)]
    assert choose_victims(records, needed_bytes=30, budget_bytes=100, max_models=3) is None


def test_model_count_limit_forces_an_eviction_even_with_free_bytes() -> None:
    records = [record("a", 1, 1.0), record("b", 1, 2.0)]
    assert choose_victims(records, needed_bytes=1, budget_bytes=100, max_models=2) == ("a",)


def test_ties_in_last_use_are_broken_by_id_for_a_deterministic_choice() -> None:
    records = [record("b", 50, 1.0), record("a", 50, 1.0)]
    assert choose_victims(records, needed_bytes=50, budget_bytes=100, max_models=3) == ("a",)


def test_model_still_unloading_counts_against_the_budget_and_is_not_a_victim() -> None:
    records = [record("going", 60, 1.0, unloading=True), record("idle", 30, 2.0)]
    assert choose_victims(records, needed_bytes=40, budget_bytes=100, max_models=5) == ("idle",)
