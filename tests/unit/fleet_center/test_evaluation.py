"""Evaluation metrics against examples worked out by hand (the arithmetic is in the comments)."""

import pytest

from fleet_center.evaluation import (
    TaskResult,
    corpus_metrics,
    group_report,
    normalize_answer,
    parse_tc_label,
    quality_table,
    round_report,
    score_task,
)
from fleet_center.workload import NER, QA, SG, TC, TS, Task

NER_TASK = Task(1, NER, "Maria Lopez flew to Lisbon .", ("B-PER", "I-PER", "O", "O", "B-LOC", "O"))


def test_tc_answer_is_correct_when_its_first_label_word_matches():
    task = Task(1, TC, "I won the raffle!", "surprise")
    assert score_task(task, "Label: Surprise.").quality == 1.0
    assert score_task(task, "happy, or maybe surprise").quality == 0.0  # the first label word counts
    assert score_task(task, "no idea").quality == 0.0


def test_tc_label_parsing_ignores_words_that_only_contain_a_label():
    assert parse_tc_label("unhappy") is None  # 'unhappy' is not the label 'happy'
    assert parse_tc_label("I'd say ANGRY") == "angry"


def test_ner_partial_entities_score_entity_f1():
    # Predicted entities {PER 0-1}; reference {PER 0-1, LOC 4}. P = 1/1, R = 1/2, F1 = 2*1*0.5/1.5 = 2/3.
    score = score_task(NER_TASK, "B-PER I-PER O O O O")
    assert score.quality == pytest.approx(2 / 3)


def test_ner_boundary_error_gets_no_credit_for_that_entity():
    # "B-PER O" predicts PER span 0-0, reference is 0-1: no exact match; LOC matches.
    # P = 1/2, R = 1/2, F1 = 1/2.
    score = score_task(NER_TASK, ["B-PER", "O", "O", "O", "B-LOC", "O"])
    assert score.quality == pytest.approx(0.5)


def test_ner_short_or_garbled_answer_is_padded_with_o():
    # Two tags only, and an unknown tag: reads as B-PER I-PER O O O O -> F1 2/3 as above.
    assert score_task(NER_TASK, "B-PER I-PER B-FOO").quality == pytest.approx(2 / 3)


def test_ner_sentence_without_entities_scores_one_when_none_predicted():
    task = Task(2, NER, "It rained all day .", ("O",) * 5)
    assert score_task(task, "O O O O O").quality == 1.0
    assert score_task(task, "B-LOC O O O O").quality == 0.0  # one spurious entity: P = 0, R undefined -> 0


def test_ner_corpus_f1_is_micro_over_sentences():
    # Sentence 1: 1 of 2 reference entities found, 1 predicted. Sentence 2: 1 predicted, 1 reference, correct.
    # Totals: TP = 2, predicted = 2, reference = 3 -> P = 1, R = 2/3, F1 = 0.8 (the per-sentence mean would be 0.833).
    other = Task(3, NER, "Acme hired Bo .", ("B-ORG", "O", "O", "O"))
    results = [
        TaskResult(NER_TASK, "B-PER I-PER O O O O", "m", "e1"),
        TaskResult(other, "B-ORG O O O", "m", "e1"),
    ]
    assert corpus_metrics(NER, results)["f1"] == pytest.approx(0.8)


def test_qa_normalisation_drops_case_punctuation_and_articles():
    assert normalize_answer("The  Han Dynasty!") == "han dynasty"


def test_qa_exact_match_and_token_f1():
    task = Task(4, QA, "Context: ... Question: ...", reference_value="the Han dynasty")
    # prediction tokens after normalisation: han dynasty i think (4); reference: han dynasty (2).
    # common 2 -> P = 2/4, R = 2/2, F1 = 2*0.5*1/1.5 = 2/3.
    score = score_task(task, "Han dynasty, I think")
    assert score.metrics["exact_match"] == 0.0
    assert score.quality == pytest.approx(2 / 3)
    assert score_task(task, "Han Dynasty.").metrics["exact_match"] == 1.0


def test_ts_sentence_chrf_matches_hand_computation():
    # Characters without spaces: hypothesis "thecat" (6), reference "thecatsat" (9). Every hypothesis
    # n-gram occurs in the reference, so precision is 1 for n = 1..6; recall is 6/9, 5/8, 4/7, 3/6,
    # 2/5, 1/4, mean 0.502183. chrF (beta 2) = 5*P*R/(4P+R) = 5*0.502183/4.502183 = 0.557710.
    task = Task(5, TS, "猫", reference_value="the cat sat")
    assert score_task(task, "the cat").quality == pytest.approx(0.557710, abs=1e-5)


def test_ts_corpus_bleu_matches_hand_computation():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat", both 6 words (brevity penalty 1).
    # Clipped n-gram precisions: 1-gram 5/6, 2-gram 3/5, 3-gram 2/4, 4-gram 1/3.
    # BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** 0.25 = 0.537285.
    task = Task(6, TS, "猫坐在垫子上", reference_value="the cat sat on a mat")
    metrics = corpus_metrics(TS, [TaskResult(task, "the cat sat on the mat", "m", None)])
    assert metrics["bleu"] == pytest.approx(53.7285, abs=1e-3)


def test_sg_rouge_l_matches_hand_computation():
    # LCS of "the cat sat on the mat" and "the cat lay on the mat" is "the cat on the mat" (5 of 6).
    # P = R = 5/6 -> F = 5/6.
    task = Task(7, SG, "A paragraph.", reference_value="the cat lay on the mat")
    assert score_task(task, "the cat sat on the mat").quality == pytest.approx(5 / 6)


def test_text_task_rejects_tag_list():
    with pytest.raises(TypeError):
        score_task(Task(8, QA, "q", reference_value="a"), ["a"])


def test_round_report_and_groups_split_by_type_model_and_edge():
    tc = Task(9, TC, "yay", "happy")
    results = [
        TaskResult(tc, "happy", "small", "e1"),
        TaskResult(tc, "sad", "small", "e2"),
        TaskResult(tc, "happy", "big", None),
        TaskResult(NER_TASK, "B-PER I-PER O O B-LOC O", "big", None),
    ]
    report = round_report(results)
    assert report["TC"]["accuracy"] == pytest.approx(2 / 3)
    assert report["NER"]["f1"] == 1.0
    groups = group_report(results)
    assert groups[("small", "e2", TC)]["accuracy"] == 0.0
    assert groups[("big", None, TC)]["count"] == 1.0


def test_quality_table_averages_per_model_and_type_with_default_for_unseen():
    tc = Task(9, TC, "yay", "happy")
    table = quality_table(
        [TaskResult(tc, "happy", "small", "e1"), TaskResult(tc, "sad", "small", "e1")], default=0.25
    )
    assert table["small"][TC] == 0.5
    assert table["small"][QA] == 0.25
