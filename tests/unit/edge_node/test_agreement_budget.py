"""The agreement budget moves exit thresholds to spend exactly the disagreement its target allows."""

import math

import numpy as np
import pytest

from edge_node.collab.agreement_budget import AgreementBudget, BudgetBook, shifted_threshold
from edge_node.collab.operating_point import choose_budget_target, overall_agreement, simulate_budget
from models.exits.policy import ExitPolicy


def calibrated(count=20000, seed=0):
    """One exit whose score is a calibrated probability: the exit is right with probability = its score."""
    rng = np.random.default_rng(seed)
    score = rng.beta(2.0, 1.2, count)
    correct = rng.uniform(0, 1, count) < score
    features = np.zeros((count, 7))
    features[:, 0] = score
    return {10: features}, {10: correct}


def test_a_shift_moves_thresholds_in_logit_space_and_leaves_always_and_never_alone():
    assert shifted_threshold(0.8, 0.0) == pytest.approx(0.8)
    assert shifted_threshold(0.8, -math.log(4.0)) == pytest.approx(0.5)  # logit(0.8) = log 4
    assert shifted_threshold(0.0, -1.0) == 0.0 and shifted_threshold(1.01, -1.0) == 1.01
    assert shifted_threshold(0.6, -0.5) < 0.6 < shifted_threshold(0.6, 0.5)


def test_cloud_tokens_lower_the_thresholds_and_poor_exits_raise_them_within_the_limit():
    budget = AgreementBudget(target=0.9, step=1.0, limit=0.5)
    budget.record(None)
    assert budget.shift == pytest.approx(-0.1)  # a cloud token spends nothing of the 0.1 allowed
    budget.record(0.5)
    assert budget.shift == pytest.approx(0.3)  # an exit expected wrong half the time spends 0.5
    for _ in range(100):
        budget.record(None)
    assert budget.shift == -0.5
    assert budget.tokens == 102 and budget.expected_agreement == pytest.approx(1 - 0.5 / 102)


def test_the_budget_policy_moves_every_rule_and_keeps_disabled_exits_disabled():
    base = ExitPolicy.top_probability({10: 0.9, 15: 0.7, 20: 2.0})
    budget = AgreementBudget(target=0.9, shift=-1.0)
    moved = budget.policy(base)
    assert [rule.threshold for rule in moved.rules] == pytest.approx(
        [shifted_threshold(0.9, -1.0), shifted_threshold(0.7, -1.0), 2.0])
    assert [rule.weights for rule in moved.rules] == [rule.weights for rule in base.rules]


def test_with_calibrated_scores_the_budget_lands_on_its_target_from_a_threshold_too_strict_or_too_loose():
    features, correct = calibrated()
    scores = {10: features[10][:, 0]}
    for start in (0.85, 0.4):  # within the shift limit (1.5 logits) of the threshold the target needs
        policy = ExitPolicy.top_probability({10: start})
        static_fraction, static_agreement = overall_agreement(policy.rules, (start,), scores, correct)
        fraction, agreement = simulate_budget(policy, features, correct, target=0.9)
        assert agreement == pytest.approx(0.9, abs=0.01)
        if static_agreement > 0.9:
            assert fraction > static_fraction + 0.05  # spends what the strict threshold left unused
        else:
            assert fraction < static_fraction  # gives back what the loose threshold overspent


def test_the_chosen_target_is_the_lowest_whose_simulated_agreement_meets_the_requirement():
    features, correct = calibrated(seed=1)
    policy = ExitPolicy.top_probability({10: 0.9})
    choice = choose_budget_target(policy, features, correct, 0.9, targets=(0.85, 0.9, 0.92, 0.95))
    rows = {row["target"]: row for row in choice.simulated}
    assert rows[choice.target]["agreement"] >= 0.9
    assert all(row["agreement"] < 0.9 for target, row in rows.items() if target < choice.target)
    assert rows[0.85]["exit_fraction"] > rows[0.95]["exit_fraction"]


def test_the_book_keeps_one_budget_per_model_for_collaborative_answers_on_the_calibrated_policy():
    book = BudgetBook(0.91)
    first = book.for_answer("smollm2-135m", "collaborative", None)
    assert first is not None and first.target == 0.91
    assert book.for_answer("smollm2-135m", "collaborative", None) is first
    assert book.for_answer("smollm2-135m-bf16", "collaborative", None) is not first
    assert book.for_answer("smollm2-135m", "speculative", None) is None
    assert book.for_answer("smollm2-135m", "collaborative", 0.8) is None  # a plain threshold is not calibrated
    assert BudgetBook(None).for_answer("smollm2-135m", "collaborative", None) is None


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5])
def test_targets_outside_zero_one_are_refused(target):
    with pytest.raises(ValueError, match="target"):
        AgreementBudget(target)


def test_the_books_counters_sum_tokens_and_disagreements_and_report_the_busiest_models_shift():
    book = BudgetBook(0.9)
    assert book.counters() == {}  # nothing counted yet: no fields in the heartbeat
    busy, quiet = book.for_answer("a", "collaborative", None), book.for_answer("b", "collaborative", None)
    assert busy is not None and quiet is not None
    for _ in range(3):
        busy.record(None)
    quiet.record(0.6)
    assert book.counters() == {"budget_tokens": 4.0, "budget_expected_disagreements": pytest.approx(0.4),
                               "budget_shift": busy.shift}


def test_saved_shifts_start_the_next_books_budgets_and_a_bad_file_is_ignored(tmp_path):
    path = tmp_path / "pi-01" / "agreement_budgets.json"
    book = BudgetBook(0.9, state_path=path)
    book.save()
    assert not path.exists()  # nothing learnt, nothing written
    budget = book.for_answer("m", "collaborative", None)
    assert budget is not None
    for _ in range(5):
        budget.record(None)
    book.save()
    path.unlink()
    book.save()
    assert not path.exists()  # nothing moved since the last write: no write
    budget.record(None)
    book.save()
    again = BudgetBook(0.9, state_path=path).for_answer("m", "collaborative", None)
    assert again is not None and again.shift == pytest.approx(budget.shift) and again.tokens == 0
    path.write_text('{"format": 1, "shifts": {"m": 99.0}}')
    clamped = BudgetBook(0.9, state_path=path).for_answer("m", "collaborative", None)
    assert clamped is not None and clamped.shift == clamped.limit
    for bad in ("not json", '{"format": 7, "shifts": {}}', '{"format": 1, "shifts": {"m": "x"}}', "[]"):
        path.write_text(bad)
        fresh = BudgetBook(0.9, state_path=path).for_answer("m", "collaborative", None)
        assert fresh is not None and fresh.shift == 0.0


def test_saving_to_an_unwritable_place_is_logged_not_raised(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    book = BudgetBook(0.9, state_path=tmp_path / "file" / "budgets.json")  # a file where a directory should be
    budget = book.for_answer("m", "collaborative", None)
    assert budget is not None
    budget.record(None)
    book.save()
    assert "cannot save agreement budgets" in caplog.text
