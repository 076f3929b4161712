"""Inference-then-mining: after the edge has answered, is the answer hard enough to ask the cloud?

An answer escalates the whole query when it looks hard: the edge model was unsure of its own tokens
(low mean top probability), it repeated itself (a degenerate loop), or it cannot be parsed as an
answer of its task type (no emotion label, no entity line, an empty or untranslated text).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
