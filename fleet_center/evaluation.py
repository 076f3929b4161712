"""Scoring of task answers: a quality in [0, 1] per task, and metrics per round and per group.

Per task type: TC accuracy; NER entity-level F1 (seqeval, strict BIO entities); QA exact match and
token F1 after SQuAD normalisation; TS BLEU and chrF (sacrebleu); SG ROUGE-L (rouge-score).
The per-task quality is the metric that is meaningful for one item: TC correctness, the sentence's
entity F1, QA token F1, TS sentence chrF / 100 (sentence BLEU is mostly 0 on short sentences),
SG ROUGE-L F. Corpus metrics are computed over all items of a type at once (micro NER F1, corpus
BLEU and chrF), as the metrics' authors define them, not as means of per-task numbers.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sacrebleu
from rouge_score import rouge_scorer
from seqeval.metrics import f1_score as seqeval_f1

from fleet_center.workload import NER, NER_TAGS, QA, SG, TASK_TYPE_NAMES, TC, TC_LABELS, TS, Task

logger = logging.getLogger(__name__)

Prediction = str | Sequence[str]  # text, or NER tags as a list
_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and English articles, squeeze spaces."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def qa_exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def qa_token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 over normalised tokens; two empty answers agree fully."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def parse_tc_label(text: str) -> str | None:
    """The first emotion label word in a model's answer ('Label: Happy.' -> 'happy'), or None."""
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in TC_LABELS:
            return word
    return None


def parse_ner_tags(prediction: Prediction, num_tokens: int) -> list[str]:
    """Tags from a list or a whitespace-separated string, cut or padded with 'O' to `num_tokens`.

    Unknown tags become 'O': a malformed answer loses those entities instead of failing the round.
    """
    tags = prediction.split() if isinstance(prediction, str) else list(prediction)
    tags = [tag if tag in NER_TAGS else "O" for tag in tags[:num_tokens]]
    return tags + ["O"] * (num_tokens - len(tags))


def ner_f1(predicted: Sequence[Sequence[str]], expected: Sequence[Sequence[str]]) -> float:
    """Entity-level micro F1 over sentences; 1.0 when neither side has any entity."""
    has_entities = any(tag != "O" for tags in (*predicted, *expected) for tag in tags)
    if not has_entities:
        return 1.0
    return float(
        seqeval_f1([list(tags) for tags in expected], [list(tags) for tags in predicted], zero_division=0)
    )


def chrf(prediction: str, reference: str) -> float:
    """Sentence chrF in [0, 100]."""
    return float(sacrebleu.sentence_chrf(prediction, [reference]).score)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure in [0, 1]."""
    return float(_ROUGE.score(reference, prediction)["rougeL"].fmeasure)


@dataclass(frozen=True, slots=True)
class TaskScore:
    task_id: int
    task_type: int
    quality: float  # in [0, 1], comparable across task types
    metrics: Mapping[str, float]  # the type's per-item metrics


def score_task(task: Task, prediction: Prediction) -> TaskScore:
    """Score one answer against the task's reference.

    Raises TypeError if a text-type task gets a tag list instead of a string.
    """
    if task.task_type != NER and not isinstance(prediction, str):
        raise TypeError(f"task {task.task_id}: {TASK_TYPE_NAMES[task.task_type]} answers must be text")
    if task.task_type == TC:
        correct = float(parse_tc_label(prediction) == task.reference_enum)
        return TaskScore(task.task_id, TC, correct, {"accuracy": correct})
    if task.task_type == NER:
        reference = list(task.reference)
        value = ner_f1([parse_ner_tags(prediction, len(reference))], [reference])
        return TaskScore(task.task_id, NER, value, {"f1": value})
    reference = str(task.reference_value)
    if task.task_type == QA:
        f1 = qa_token_f1(prediction, reference)
        return TaskScore(
            task.task_id, QA, f1, {"exact_match": qa_exact_match(prediction, reference), "f1": f1}
        )
    if task.task_type == TS:
        value = chrf(prediction, reference)
        return TaskScore(task.task_id, TS, value / 100.0, {"chrf": value})
    assert task.task_type == SG, f"task {task.task_id}: unknown type {task.task_type}"
    value = rouge_l(prediction, reference)
    return TaskScore(task.task_id, SG, value, {"rouge_l": value})


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One answered task as the round loop collects it."""

    task: Task
    prediction: Prediction
    model_id: str
    edge_id: str | None  # None: answered by the cloud
    round_index: int = 0


def corpus_metrics(task_type: int, results: Sequence[TaskResult]) -> dict[str, float]:
    """The type's metrics over `results` (all of that type), plus `quality` and `count`.

    Raises ValueError if a result has another type.
    """
    if any(result.task.task_type != task_type for result in results):
        raise ValueError(f"corpus_metrics({TASK_TYPE_NAMES[task_type]}): results of another type")
    if not results:
        return {"count": 0.0}
    scores = [score_task(result.task, result.prediction) for result in results]
    metrics: dict[str, float] = {
        "count": float(len(results)),
        "quality": sum(score.quality for score in scores) / len(scores),
    }
    if task_type == NER:
        expected = [list(result.task.reference) for result in results]
        predicted = [
            parse_ner_tags(result.prediction, len(tags))
            for result, tags in zip(results, expected, strict=True)
        ]
        metrics["f1"] = ner_f1(predicted, expected)
    elif task_type == TS:
        hypotheses = [str(result.prediction) for result in results]
        references = [[str(result.task.reference_value) for result in results]]
        metrics["bleu"] = float(sacrebleu.corpus_bleu(hypotheses, references).score)
        metrics["chrf"] = float(sacrebleu.corpus_chrf(hypotheses, references).score)
    else:
        for name in scores[0].metrics:
            metrics[name] = sum(score.metrics[name] for score in scores) / len(scores)
    return metrics


def _by_type(results: Sequence[TaskResult]) -> dict[int, list[TaskResult]]:
    grouped: dict[int, list[TaskResult]] = defaultdict(list)
    for result in results:
        grouped[result.task.task_type].append(result)
    return grouped


def round_report(results: Sequence[TaskResult]) -> dict[str, dict[str, float]]:
    """Metrics per task type name ('TC', ...) for one round's results."""
    return {TASK_TYPE_NAMES[t]: corpus_metrics(t, group) for t, group in sorted(_by_type(results).items())}


def group_report(results: Sequence[TaskResult]) -> dict[tuple[str, str | None, int], dict[str, float]]:
    """Metrics per (model id, edge id or None for the cloud, task type)."""
    grouped: dict[tuple[str, str | None, int], list[TaskResult]] = defaultdict(list)
    for result in results:
        grouped[(result.model_id, result.edge_id, result.task.task_type)].append(result)
    return {
        key: corpus_metrics(key[2], group)
        for key, group in sorted(grouped.items(), key=lambda item: str(item[0]))
    }


def quality_table(results: Sequence[TaskResult], default: float = 0.0) -> dict[str, tuple[float, ...]]:
    """Mean task quality per model and task type, the scheduler's quality table.

    Types a model has no results for get `default`.
    """
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(TASK_TYPE_NAMES))
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(TASK_TYPE_NAMES))
    for result in results:
        score = score_task(result.task, result.prediction)
        sums[result.model_id][score.task_type] += score.quality
        counts[result.model_id][score.task_type] += 1
    return {
        model_id: tuple(
            sums[model_id][t] / counts[model_id][t] if counts[model_id][t] else default
            for t in range(len(TASK_TYPE_NAMES))
        )
        for model_id in sums
    }


def prediction_from_answer(task_type: int, parsed: Mapping[str, object], answer: str) -> Prediction:
    """What a node's parsed answer contributes to scoring: NER tags, the TC label, else the parsed text."""
    if task_type == NER:
        tags = parsed.get("tags")
        return [str(t) for t in tags] if isinstance(tags, list | tuple) else []
    if task_type == TC:
        label = parsed.get("label")
        return str(label) if label else answer
    text = parsed.get("text")
    return str(text) if isinstance(text, str) else answer
