from __future__ import annotations

import numpy as np

from models.exits.calibration import calibrate, cross_validated_target, evaluate, fit_logistic
from models.exits.policy import ExitFeatures, ExitPolicy


def synthetic(seed: int, count: int = 2000) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Heads whose correctness rises with top probability; deeper heads are more often right."""
    rng = np.random.default_rng(seed)
    features, correct = {}, {}
    for depth, layer in enumerate((10, 15, 20)):
        top = rng.uniform(0, 1, count)
        feats = np.zeros((count, len(ExitFeatures.names())))
        feats[:, 0] = top
        feats[:, 1] = top * rng.uniform(0.5, 1, count)
        feats[:, 2] = (1 - top) * 4
        features[layer] = feats
        correct[layer] = rng.uniform(0, 1, count) < np.clip(top + 0.1 * depth, 0, 1)
    return features, correct


def test_logistic_fit_separates_informative_feature() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2))
    y = (x[:, 0] + 0.1 * rng.normal(size=500)) > 0
    weights, _ = fit_logistic(x, y)
    assert weights[0] > 5 * abs(weights[1])


def test_calibrated_policy_meets_target_on_calibration_data() -> None:
    features, correct = synthetic(0)
    policy = calibrate(features, correct, target_agreement=0.9, learned=False)
    point = evaluate(policy, features, correct)
    assert point.agreement >= 0.9
    assert point.exit_fraction > 0.2


def test_calibrated_policy_generalises_to_fresh_data() -> None:
    policy = calibrate(*synthetic(0), target_agreement=0.9, learned=True)
    point = evaluate(policy, *synthetic(1))
    assert point.agreement >= 0.85 and point.exit_fraction > 0.2


def test_evaluate_matches_per_position_decisions() -> None:
    features, correct = synthetic(2, count=200)
    policy = calibrate(features, correct, target_agreement=0.85, learned=True)
    exits = 0
    for i in range(200):
        for layer in policy.exit_layers:
            if policy.should_exit(layer, tuple(features[layer][i])):
                exits += 1
                break
    assert abs(evaluate(policy, features, correct).exit_fraction - exits / 200) < 1e-9


def test_per_layer_fractions_sum_to_total() -> None:
    features, correct = synthetic(3)
    point = evaluate(ExitPolicy.top_probability({10: 0.9, 15: 0.8, 20: 0.7}), features, correct)
    assert abs(sum(f for f, _ in point.per_layer.values()) - point.exit_fraction) < 1e-9


def test_cross_validated_target_meets_the_requirement_out_of_fold() -> None:
    features, correct = synthetic(0, count=1500)
    groups = np.arange(1500) // 30  # 50 sequences of 30 positions
    targets = (0.86, 0.88, 0.90, 0.92, 0.94)
    choice = cross_validated_target(features, correct, groups, 0.90, targets, folds=5, learned=False)
    rows = {row["target_agreement"]: row for row in choice.cross_validated}
    assert set(rows) == set(targets)
    assert rows[choice.target_agreement]["agreement"] >= 0.90
    # the chosen one exits most among the targets that meet the requirement out of fold
    meeting = [row for row in choice.cross_validated if row["agreement"] >= 0.90]
    assert rows[choice.target_agreement]["exit_fraction"] == max(row["exit_fraction"] for row in meeting)
    # a stricter requirement never picks a lower target
    stricter = cross_validated_target(features, correct, groups, 0.94, targets, folds=5, learned=False)
    assert stricter.target_agreement >= choice.target_agreement


def test_cross_validated_target_falls_back_to_the_highest_target_when_none_meets() -> None:
    features, correct = synthetic(3, count=600)
    choice = cross_validated_target(features, correct, np.arange(600) // 20, 1.01, (0.8, 0.9), folds=3, learned=False)
    assert choice.target_agreement == 0.9
