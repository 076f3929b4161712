"""Inference-then-mining: which edge answers escalate to the cloud."""

import pytest

from routing.escalation import (
    AnswerSignals,
    EscalationRule,
    answer_signals,
    fit_escalation,
    parse_ok,
    repetition_share,
)


def test_a_looping_answer_has_a_high_repetition_share():
    assert repetition_share("the cat sat on the cat sat on the cat sat on the mat") > 0.4


def test_a_fresh_answer_has_no_repetition():
    assert repetition_share("a quick brown fox jumps over the lazy dog") == 0.0


def test_an_unparseable_answer_escalates():
    assert EscalationRule().hard(AnswerSignals(0.99, 0.0, parse_ok=False))[0]


def test_a_low_confidence_answer_escalates():
    assert EscalationRule(min_confidence=0.6).hard(AnswerSignals(0.3, 0.0, True))[0]


def test_a_degenerate_answer_escalates():
    assert EscalationRule(max_repetition=0.3).hard(AnswerSignals(0.9, 0.8, True))[0]


def test_a_confident_clean_answer_stays_on_the_edge():
    assert not EscalationRule().hard(AnswerSignals(0.9, 0.0, True))[0]


def test_a_classification_without_a_label_does_not_parse():
    assert not parse_ok(0, {"label": None}, "The person who spoke")


def test_a_translation_still_in_chinese_does_not_parse():
    assert not parse_ok(3, {"text": "我们 went home"}, "我们 went home")


def test_signals_of_a_clean_summary():
    signals = answer_signals(4, {"text": "Rain closed the bridge."}, "Rain closed the bridge.", 0.8)
    assert signals.parse_ok and signals.repetition == 0.0 and signals.mean_confidence == 0.8


def test_the_fit_escalates_the_fewest_answers_that_reach_the_quality_target():
    # Unparsed answers are where the cloud is better; two low-confidence answers are fine as they are.
    signals = [AnswerSignals(0.9, 0.0, False), AnswerSignals(0.8, 0.0, False), AnswerSignals(0.2, 0.0, True),
               AnswerSignals(0.3, 0.0, True), AnswerSignals(0.9, 0.0, True), AnswerSignals(0.7, 0.0, True)]
    edge = [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    cloud = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    fit = fit_escalation(signals, edge, cloud)
    assert fit.reached_target and fit.quality_ratio == 1.0 and fit.escalated_share == 2 / 6
    assert fit.rule.escalate_parse_failures and all(not fit.rule.hard(s)[0] for s in signals[2:])


def test_the_fit_settles_for_the_best_quality_within_the_escalation_budget():
    signals = [AnswerSignals(0.1 * i, 0.0, True) for i in range(1, 9)]  # the cloud is better everywhere
    fit = fit_escalation(signals, [0.0] * 8, [1.0] * 8, max_escalated=0.25)
    assert not fit.reached_target and fit.escalated_share == 0.25 and fit.quality_ratio == 0.25
    assert [fit.rule.hard(s)[0] for s in signals] == [True, True] + [False] * 6  # the least confident two


def test_a_fitted_rule_round_trips_through_its_file_and_a_broken_file_is_named(tmp_path):
    rule = EscalationRule(0.42, 0.5, False)
    rule.save(tmp_path / "escalation-m.json", {"answers": 3})
    assert EscalationRule.load(tmp_path / "escalation-m.json") == rule
    (tmp_path / "bad.json").write_text('{"format": 1, "rule": {"min_confidence": 7}}')
    with pytest.raises(ValueError, match="bad.json"):
        EscalationRule.load(tmp_path / "bad.json")
