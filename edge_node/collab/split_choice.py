"""Which layer a speculative edge drafts at, chosen per answer from what its earlier answers measured.

A deeper split is accepted more often and leaves the cloud fewer layers, but each draft pass costs more
edge time; which wins depends on the edge's speed against the round trip (docs/collaboration.md,
"Choosing the drafting split"). Per candidate split k the chooser keeps, from answers drafted there,
the tokens a verification round yields (T_k), the edge passes it takes (P_k) and the time of one pass;
shared by all splits, the network round trip and the cloud's time per layer. A split is worth

    rate(k) = T_k / (P_k * pass_ms(k) + rtt_ms + cloud_layer_ms * (L - k))

tokens per second (passes made while a verification is in flight overlap its wait: P_k leaves them out). Splits
not measured yet are tried first, shallowest first; after that the best rate is chosen. When a
split's pass time moves (a CPU quota, a busy core), the other splits' pass times move by the same
factor, so the choice follows the edge's speed without trying every split again. Pure: no torch, no I/O.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_node.collab.config import CollabConfig, drafting_candidates
from edge_node.collab.gamma import smoothed

if TYPE_CHECKING:
    from models.loaded import LoadedModel

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class AnswerFigures:
    """What one speculative answer measured at its split: totals over its verification rounds (the stepper
    adds every round after the first, whose drafting includes the prompt)."""

    split: int
    rounds: int = 0
    tokens: int = 0  # tokens those rounds decided
    passes: int = 0  # edge draft passes made before each verification was sent
    drafting_ms: float = 0.0
    wait_ms: float = 0.0  # request to verdict, the cloud's compute excluded
    cloud_ms: float = 0.0  # the cloud's compute

    def add(self, tokens: int, passes: int, drafting_ms: float, wait_ms: float, cloud_ms: float) -> None:
        self.rounds += 1
        self.tokens += tokens
        self.passes += passes
        self.drafting_ms += drafting_ms
        self.wait_ms += max(0.0, wait_ms)
        self.cloud_ms += cloud_ms


@dataclass(slots=True)
class _SplitRecord:
    tokens_per_round: float
    passes_per_round: float
    pass_ms: float


class SplitChooser:
    """One edge's drafting split for one model, learned across answers (`choose`, then `observe`)."""

    def __init__(self, candidates: tuple[int, ...], num_layers: int, smoothing: float = 0.3) -> None:
        assert candidates and list(candidates) == sorted(set(candidates)), f"candidates must ascend: {candidates}"
        assert candidates[0] > 0 and candidates[-1] < num_layers, f"splits must lie inside the {num_layers} layers"
        self.candidates, self.num_layers, self.smoothing = candidates, num_layers, smoothing
        self.records: dict[int, _SplitRecord] = {}
        self.rtt_ms: float | None = None
        self.cloud_layer_ms: float | None = None

    def choose(self) -> int:
        """The next answer's split: the first one not measured yet, else the best expected rate."""
        for split in self.candidates:
            if split not in self.records:
                return split
        return max(self.candidates, key=lambda split: (self.rate(split), -split))

    def rate(self, split: int) -> float:
        """Expected tokens per second at a measured `split`."""
        record = self.records[split]
        round_ms = (record.passes_per_round * record.pass_ms + (self.rtt_ms or 0.0)
                    + (self.cloud_layer_ms or 0.0) * (self.num_layers - split))
        return record.tokens_per_round / max(round_ms, 1e-9) * 1e3

    def observe(self, figures: AnswerFigures) -> None:
        """Fold in one answer; answers without a verified round, or at a split not offered, teach nothing."""
        if figures.rounds < 1 or figures.split not in self.candidates or figures.passes < 1:
            return
        tokens, passes = figures.tokens / figures.rounds, figures.passes / figures.rounds
        answer_pass_ms = figures.drafting_ms / figures.passes
        record = self.records.get(figures.split)
        if record is None:
            self.records[figures.split] = _SplitRecord(tokens, passes, answer_pass_ms)
        else:
            pass_ms = self._mean(record.pass_ms, answer_pass_ms)
            drift = pass_ms / record.pass_ms if record.pass_ms > 0 else 1.0
            for other, kept in self.records.items():  # the edge as a whole got slower or faster
                if other != figures.split:
                    kept.pass_ms *= drift
            record.tokens_per_round = self._mean(record.tokens_per_round, tokens)
            record.passes_per_round = self._mean(record.passes_per_round, passes)
            record.pass_ms = pass_ms
        self.rtt_ms = self._mean(self.rtt_ms, figures.wait_ms / figures.rounds)
        self.cloud_layer_ms = self._mean(self.cloud_layer_ms,
                                         figures.cloud_ms / figures.rounds / (self.num_layers - figures.split))
        logger.debug("split %d: %.2f tokens / round, %.2f passes of %.0f ms; rates %s", figures.split, tokens, passes,
                     answer_pass_ms, {s: round(self.rate(s), 2) for s in self.records})

    def _mean(self, current: float | None, value: float) -> float:
        return smoothed(current, value, self.smoothing)


class SplitBook:
    """An edge's split choosers: one per model id, made on first use (a model's heads decide its candidates)."""

    def __init__(self) -> None:
        self._choosers: dict[str, SplitChooser] = {}
        self._lock = threading.Lock()

    def for_answer(self, config: CollabConfig, model: LoadedModel) -> SplitChooser | None:
        """The model's chooser for a speculative answer with `speculative_split_auto`; None otherwise, or when
        the model has no head deeper than `split_layer` (nothing to choose)."""
        if config.mode != "speculative" or not config.speculative_split_auto:
            return None
        heads = model.exit_heads.exit_layers if model.exit_heads is not None else ()
        candidates = drafting_candidates(config, model.num_layers, heads)
        if len(candidates) < 2:
            return None
        with self._lock:
            chooser = self._choosers.get(model.model_id)
            if chooser is None or chooser.candidates != candidates:
                chooser = self._choosers[model.model_id] = SplitChooser(candidates, model.num_layers)
            return chooser
