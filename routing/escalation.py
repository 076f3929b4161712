"""Inference-then-mining: after the edge has answered, is the answer hard enough to ask the cloud?

An answer escalates the whole query when it looks hard: the edge model was unsure of its own tokens
(low mean top probability), it repeated itself (a degenerate loop), or it cannot be parsed as an
answer of its task type (no emotion label, no entity line, an empty or untranslated text).

The thresholds are fitted per edge model on the router-training part (`fit_escalation`, written by
`python -m benchmarks.router_data train` to `routing/data/escalation-<edge model>.json`): like the
miner's operating point, the fewest escalations whose quality reaches 0.95 of cloud-only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from routing.operating_point import cheapest_reaching, quality_ratio, routed_quality

logger = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True, slots=True)
class AnswerSignals:
    mean_confidence: float | None  # mean top probability of the answer's tokens under the edge model; None unknown
    repetition: float  # share of repeated word 3-grams in the answer (0 fresh .. ~1 one loop)
    parse_ok: bool  # the answer parses as an answer of its task type


@dataclass(frozen=True)
class EscalationRule:
    min_confidence: float = 0.55  # mean top probability below this escalates
    max_repetition: float = 0.3  # share of repeated 3-grams above this escalates
    escalate_parse_failures: bool = True

    def hard(self, signals: AnswerSignals) -> tuple[bool, str]:
        """(escalate?, why)."""
        if self.escalate_parse_failures and not signals.parse_ok:
            return True, "unparseable answer"
        if signals.repetition > self.max_repetition:
            return True, f"repetition {signals.repetition:.2f}"
        if signals.mean_confidence is not None and signals.mean_confidence < self.min_confidence:
            return True, f"confidence {signals.mean_confidence:.2f}"
        return False, "answer looks fine"

    def save(self, path: Path, fitted_on: Mapping[str, object] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": ESCALATION_FORMAT, "rule": asdict(self), "fitted_on": dict(fitted_on or {})},
                                   indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> EscalationRule:
        """Raises ValueError naming the file for anything wrong with it (OSError if it cannot be read)."""
        try:
            body = json.loads(Path(path).read_text())
            if body.get("format") != ESCALATION_FORMAT:
                raise ValueError(f"not an escalation rule of format {ESCALATION_FORMAT}")
            rule = body["rule"]
            min_confidence, max_repetition = float(rule["min_confidence"]), float(rule["max_repetition"])
            if not (0.0 <= min_confidence <= 1.0 and 0.0 <= max_repetition <= 1.0):
                raise ValueError("thresholds outside 0..1")
            return cls(min_confidence, max_repetition, bool(rule["escalate_parse_failures"]))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None


ESCALATION_FORMAT = 1


def escalation_file(directory: Path, edge_model: str) -> Path:
    """Where the rule fitted for `edge_model` lives in `directory` (written by router_data, read by edges)."""
    return directory / f"escalation-{edge_model}.json"

_REPETITION_CHOICES = (0.2, 0.3, 0.5, 1.0)  # 1.0: repetition never escalates


@dataclass(frozen=True, slots=True)
class EscalationFit:
    rule: EscalationRule
    escalated_share: float  # of the training answers
    quality_ratio: float  # routed quality / cloud-only quality on them
    reached_target: bool


def fit_escalation(signals: Sequence[AnswerSignals], edge_scores: Sequence[float], cloud_scores: Sequence[float], *,
                   target_quality_ratio: float = 0.95, max_escalated: float = 0.5) -> EscalationFit:
    """The rule with the fewest escalations whose quality reaches `target_quality_ratio` of cloud-only, within
    `max_escalated` of the answers; if none does, the best quality within it. Candidates: confidence
    thresholds just above each answer's confidence (and 0), the repetition choices, parse failures
    escalating or not. Raises ValueError for empty or unequal inputs."""
    edge, cloud = np.asarray(edge_scores, dtype=float), np.asarray(cloud_scores, dtype=float)
    if not len(signals) or not len(signals) == len(edge) == len(cloud):
        raise ValueError("need equally many answer signals, edge scores and cloud scores, at least one")
    confidence = np.array([1.0 if s.mean_confidence is None else s.mean_confidence for s in signals])
    repetition = np.array([s.repetition for s in signals])
    unparsed = np.array([not s.parse_ok for s in signals])
    cloud_mean = float(cloud.mean())
    fits = []
    for parse_failures in (True, False):
        for max_repetition in _REPETITION_CHOICES:
            for min_confidence in sorted({0.0, *(min(1.0, float(c) + 1e-9) for c in confidence)}):
                escalate = (confidence < min_confidence) | (repetition > max_repetition) | (unparsed & parse_failures)
                ratio = quality_ratio(float(routed_quality(escalate, edge, cloud).mean()), cloud_mean)
                fits.append(EscalationFit(EscalationRule(min_confidence, max_repetition, parse_failures),
                                          float(escalate.mean()), ratio, False))
    best, reached = cheapest_reaching(fits, lambda f: f.escalated_share, lambda f: f.quality_ratio,
                                      target_quality_ratio=target_quality_ratio, max_share=max_escalated)
    return replace(best, reached_target=reached)


def repetition_share(text: str, n: int = 3) -> float:
    """Share of word n-grams that already occurred earlier in `text` (0 for fewer than n + 1 words)."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def parse_ok(task_type: int, parsed: Mapping[str, object], answer: str) -> bool:
    """Whether a parsed answer is usable for its type (0 TC, 1 NER, 2 QA, 3 TS, 4 SG; other: any text)."""
    if task_type == 0:
        return bool(parsed.get("label"))
    if task_type == 1:
        entities = parsed.get("entities")
        return isinstance(entities, Sequence) and len(entities) > 0 or "none" in answer.lower()
    text = parsed.get("text")
    if not isinstance(text, str) or not text.strip():
        return False
    return not (task_type == 3 and _CJK.search(text))  # a translation still in Chinese


def answer_signals(task_type: int, parsed: Mapping[str, object], answer: str,
                   mean_confidence: float | None) -> AnswerSignals:
    return AnswerSignals(mean_confidence, repetition_share(answer), parse_ok(task_type, parsed, answer))
