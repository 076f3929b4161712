from __future__ import annotations

from benchmarks.fleet import MIN_MODEL_TASKS, run_over_model_on_its_types


def test_models_are_compared_with_the_run_on_their_own_task_types() -> None:
    easy, hard = 1, 2
    rows = [("a", easy, 0.9)] * MIN_MODEL_TASKS + [("b", hard, 0.2)] * MIN_MODEL_TASKS + [("c", hard, 0.1)] * 5
    ratios = run_over_model_on_its_types(rows)
    # a did the easy type alone: the run equals it there; b's hard type was answered a bit worse by c as well
    assert ratios["a"] == 1.0
    assert ratios["b"] == round((0.2 * MIN_MODEL_TASKS + 0.1 * 5) / (MIN_MODEL_TASKS + 5) / 0.2, 4)
    assert "c" not in ratios, "too few tasks to compare"


def test_raw_means_over_different_types_do_not_make_a_model_look_better() -> None:
    rows = [("q4", 1, 0.2)] * MIN_MODEL_TASKS + [("int8w", 2, 0.3)] * MIN_MODEL_TASKS
    assert run_over_model_on_its_types(rows) == {"int8w": 1.0, "q4": 1.0}
