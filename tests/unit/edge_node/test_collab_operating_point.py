"""The collaborative operating point counts non-exits as right (they come from the full model); no broker needed."""

import numpy as np

from edge_node.collab.operating_point import (
    choose_collab_point,
    cross_validated_collab_point,
    overall_agreement,
)
from models.exits.policy import ExitPolicy


def synthetic(count=1000, seed=0):
    """One exit whose top probability predicts correctness: right when confident, coin flip otherwise."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0, 1, count)
    correct = np.where(top > 0.5, rng.uniform(0, 1, count) < 0.95, rng.uniform(0, 1, count) < 0.3)
    features = np.zeros((count, 5))
    features[:, 0] = top
    return {10: features}, {10: correct}


def test_point_meets_the_target_over_all_positions_and_exits_as_much_as_it_can():
    features, correct = synthetic()
    policy = ExitPolicy.top_probability({10: 2.0})
    point = choose_collab_point(policy, features, correct, target_agreement=0.95)
    assert point.agreement >= 0.95
    assert 0.4 < point.exit_fraction < 1.0  # far more exits than a 0.95 agreement among exits would allow
    looser = choose_collab_point(policy, features, correct, target_agreement=0.90)
    assert looser.exit_fraction > point.exit_fraction


def test_never_exiting_agrees_everywhere():
    features, correct = synthetic()
    policy = ExitPolicy.top_probability({10: 2.0})
    assert overall_agreement(policy.rules, (2.0,), {10: features[10][:, 0]}, correct) == (0.0, 1.0)


def test_cross_validated_point_keeps_the_requirement_out_of_fold_and_is_refitted_on_everything():
    features, correct = synthetic(count=1200)
    policy = ExitPolicy.top_probability({10: 2.0})
    groups = np.arange(1200) // 40
    point, choice = cross_validated_collab_point(policy, features, correct, groups, 0.90, targets=(0.86, 0.90, 0.94))
    rows = {row["target_agreement"]: row for row in choice.cross_validated}
    assert rows[choice.target_agreement]["agreement"] >= 0.90
    assert point == choose_collab_point(policy, features, correct, choice.target_agreement)
    strict, strict_choice = cross_validated_collab_point(policy, features, correct, groups, 0.95, targets=(0.86, 0.90, 0.94))
    assert strict_choice.target_agreement >= choice.target_agreement and strict.exit_fraction <= point.exit_fraction
