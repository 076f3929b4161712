from __future__ import annotations

import numpy as np

from models.exits.calibration import calibrate, evaluate, fit_logistic
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
