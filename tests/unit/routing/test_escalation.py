"""Inference-then-mining: which edge answers escalate to the cloud."""

from routing.escalation import AnswerSignals, EscalationRule, answer_signals, parse_ok, repetition_share


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
