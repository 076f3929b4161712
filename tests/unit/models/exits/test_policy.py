from __future__ import annotations

import pytest

from models.exits.policy import ExitFeatures, ExitPolicy, ExitRule, first_exit

CONFIDENT = ExitFeatures(top_prob=0.95, margin=0.9, entropy=0.2, agrees_with_previous=1.0, previous_top_prob=0.8,
                         matches_copy_one=1.0, matches_copy_two=1.0)
UNSURE = ExitFeatures(top_prob=0.30, margin=0.05, entropy=3.0, agrees_with_previous=0.0, previous_top_prob=0.2,
                      matches_copy_one=0.0, matches_copy_two=0.0)


def test_top_probability_policy_exits_at_threshold() -> None:
    policy = ExitPolicy.top_probability({10: 0.9})
    assert policy.should_exit(10, CONFIDENT)
    assert not policy.should_exit(10, UNSURE)


def test_first_exit_picks_the_shallowest_confident_head() -> None:
    policy = ExitPolicy.top_probability({10: 0.99, 15: 0.9, 20: 0.5})
    assert first_exit(policy, {10: CONFIDENT, 15: CONFIDENT, 20: CONFIDENT}) == 15


def test_first_exit_is_none_when_no_head_is_confident() -> None:
    policy = ExitPolicy.top_probability({10: 0.9, 20: 0.9})
    assert first_exit(policy, {10: UNSURE, 20: UNSURE}) is None


def test_logistic_rule_scores_between_zero_and_one() -> None:
    rule = ExitRule(10, (4.0, 1.0, -1.0, 2.0, 0.5, 1.0, 1.0), -3.0, 0.5)
    assert 0.0 < rule.score(UNSURE) < rule.score(CONFIDENT) < 1.0


def test_threshold_above_one_disables_an_exit() -> None:
    policy = ExitPolicy.top_probability({10: 2.0})
    assert not policy.should_exit(10, ExitFeatures(1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0))


def test_policy_round_trips_through_json() -> None:
    policy = ExitPolicy((ExitRule(10, (4.0, 1.0, -1.0, 2.0, 0.5, 1.0, 1.0), -3.0, 0.7), ExitRule(15, (1, 0, 0, 0, 0, 0, 0), 0.0, 0.8)))
    assert ExitPolicy.from_json(policy.to_json()) == ExitPolicy.from_dict(policy.to_dict())
    assert ExitPolicy.from_json(policy.to_json()).rule(10).threshold == 0.7


def test_policy_with_other_features_is_refused() -> None:
    with pytest.raises(ValueError, match="features"):
        ExitPolicy.from_dict({"features": ["margin", "top_prob"], "rules": []})


def test_rule_with_wrong_weight_count_is_refused() -> None:
    with pytest.raises(ValueError, match="weights"):
        ExitRule(10, (1.0,), 0.0, 0.5)


def test_exit_layers_must_ascend() -> None:
    with pytest.raises(ValueError, match="ascending"):
        ExitPolicy.top_probability({15: 0.9}).with_thresholds({}).__class__(
            (ExitRule(15, (1, 0, 0, 0, 0, 0, 0), 0, 0.9), ExitRule(10, (1, 0, 0, 0, 0, 0, 0), 0, 0.9)))


def test_unknown_exit_layer_raises_key_error() -> None:
    with pytest.raises(KeyError, match="12"):
        ExitPolicy.top_probability({10: 0.9}).should_exit(12, CONFIDENT)


def test_a_policy_fitted_on_fewer_features_loads_with_the_same_decisions() -> None:
    older = {"features": ["top_prob", "margin", "entropy", "agrees_with_previous", "previous_top_prob"],
             "rules": [{"exit_layer": 10, "weights": [4.0, 1.0, -1.0, 2.0, 0.5], "bias": -3.0, "threshold": 0.6}]}
    policy = ExitPolicy.from_dict(older)
    assert policy.rule(10).weights == (4.0, 1.0, -1.0, 2.0, 0.5, 0.0, 0.0)
    copying = ExitFeatures(0.6, 0.3, 1.0, 1.0, 0.5, 1.0, 1.0)
    assert policy.should_exit(10, copying) == policy.should_exit(10, ExitFeatures(0.6, 0.3, 1.0, 1.0, 0.5, 0.0, 0.0))


def test_exit_score_is_the_rules_score_when_it_exits_and_none_otherwise():
    policy = ExitPolicy.top_probability({10: 0.8})
    assert policy.exit_score(10, CONFIDENT) == pytest.approx(CONFIDENT.top_prob)
    assert policy.exit_score(10, UNSURE) is None


def _draft_policy() -> ExitPolicy:
    exits = ExitPolicy.top_probability({10: 0.9, 20: 0.8})
    drafts = ExitPolicy.top_probability({24: 0.7, 28: 0.6}).rules
    return ExitPolicy(exits.rules, drafts)


def test_draft_rules_travel_apart_from_the_exits() -> None:
    policy = _draft_policy()
    assert policy.exit_layers == (10, 20)  # every exit decision sees the exits alone
    again = ExitPolicy.from_json(policy.to_json())
    assert again == policy and [r.exit_layer for r in again.draft_rules] == [24, 28]
    assert "draft_rules" not in ExitPolicy(policy.rules).to_dict()  # a policy without them keeps its old JSON
    assert policy.with_thresholds({10: 0.5}).draft_rules == policy.draft_rules
    assert policy.below(26) == ExitPolicy(policy.rules, policy.draft_rules[:1])  # a 26-layer variant's
    assert policy.below(15) == ExitPolicy(policy.rules[:1])


def test_draft_rules_must_lie_deeper_than_the_exits() -> None:
    with pytest.raises(ValueError, match="deeper"):
        ExitPolicy(ExitPolicy.top_probability({10: 0.9, 20: 0.8}).rules, ExitPolicy.top_probability({15: 0.5}).rules)
