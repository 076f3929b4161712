"""Hold collaborative agreement at a target by moving the exit thresholds while answering.

The exit policy's scores are calibrated probabilities that the exit's token is the full model's
(docs/collaboration.md, "Agreement budget": on held-out prompts the mean score of a score band matches
its accuracy), so the edge can estimate without any label how many of its tokens differ from the
full model's: an exit with score s adds 1 - s expected disagreements, a cloud token adds none.
Thresholds fixed on calibration prompts leave agreement above the target on prompts whose scores sit
differently, asking the cloud more than the target needs (or, on harder prompts, below it). The
budget moves every exit threshold by one shift in logit space after each token, a Robbins-Monro step
towards expected disagreement per token = 1 - target, so the edge spends the disagreement it is
allowed and no more. One budget per edge model, shared by its answers (it learns across them).
Pure logic; thread-safe.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from models.exits.policy import ExitPolicy

logger = logging.getLogger(__name__)
STATE_FORMAT = 1


def shifted_threshold(threshold: float, shift: float) -> float:
    """`threshold` moved by `shift` in logit space; 0 (always exit) and >= 1 (never) stay as they are."""
    if threshold <= 0.0 or threshold >= 1.0:
        return threshold
    logit = math.log(threshold / (1.0 - threshold)) + shift
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))


@dataclass
class AgreementBudget:
    target: float  # expected share of tokens equal to the full model's
    step: float = 1.0  # logit shift per unit of (allowed - observed) disagreement of one token
    limit: float = 1.5  # the shift stays within +- this many logits of the configured thresholds
    shift: float = 0.0  # current shift; < 0 exits more
    tokens: int = 0
    expected_disagreements: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"agreement target must lie in (0, 1), got {self.target}")
        if self.step <= 0.0 or self.limit < 0.0:
            raise ValueError(f"budget step must be > 0 and limit >= 0, got {self.step}, {self.limit}")
        self.shift = self._within_limit(self.shift)

    def thresholds(self, base: tuple[float, ...]) -> tuple[float, ...]:
        with self._lock:
            shift = self.shift
        return tuple(shifted_threshold(threshold, shift) for threshold in base)

    def policy(self, base: ExitPolicy) -> ExitPolicy:
        """`base` with its thresholds moved by the current shift."""
        moved = self.thresholds(tuple(rule.threshold for rule in base.rules))
        return base.with_thresholds({rule.exit_layer: threshold for rule, threshold in zip(base.rules, moved, strict=True)})

    def record(self, exit_score: float | None) -> None:
        """One token decided: by an exit with this score, or (None) by the full model in the cloud."""
        disagreement = 0.0 if exit_score is None else 1.0 - exit_score
        with self._lock:
            self.tokens += 1
            self.expected_disagreements += disagreement
            self.shift = self._within_limit(self.shift - self.step * ((1.0 - self.target) - disagreement))

    def _within_limit(self, shift: float) -> float:
        return max(-self.limit, min(self.limit, shift))

    @property
    def expected_agreement(self) -> float | None:
        """Running estimate over every recorded token; None before the first."""
        with self._lock:
            return None if self.tokens == 0 else 1.0 - self.expected_disagreements / self.tokens


class BudgetBook:
    """An edge's budgets: one AgreementBudget per model id, made on first use.

    With `state_path`, each model's shift survives a restart: `save()` writes the shifts, a new book
    starts each model's budget from its saved shift (an unreadable file is logged and ignored).
    """

    def __init__(self, target: float | None = None, step: float = 1.0, state_path: Path | None = None) -> None:
        self.target, self.step, self.state_path = target, step, state_path  # target None: thresholds as configured
        self._budgets: dict[str, AgreementBudget] = {}
        self._lock = threading.Lock()
        self._saved_shifts = self._read_shifts()  # what the file holds (read at start, then as last written)

    def for_answer(self, model_id: str, mode: str, threshold: float | None) -> AgreementBudget | None:
        """The model's budget for a collaborative answer on its calibrated policy (`threshold` None), else None."""
        if self.target is None or mode != "collaborative" or threshold is not None:
            return None
        with self._lock:
            if model_id not in self._budgets:
                self._budgets[model_id] = AgreementBudget(self.target, self.step,
                                                          shift=self._saved_shifts.get(model_id, 0.0))
            return self._budgets[model_id]

    def save(self) -> None:
        """Write every model's shift to `state_path` (atomically) when one moved since the file was last
        written (a Pi's SD card wears with writes); never raises for a full or read-only disk."""
        if self.state_path is None:
            return
        shifts = {**self._saved_shifts, **{model_id: budget.shift for model_id, budget in self.budgets().items()}}
        if shifts == self._saved_shifts:
            return
        temporary = self.state_path.with_suffix(".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps({"format": STATE_FORMAT, "shifts": shifts}, indent=1))
            os.replace(temporary, self.state_path)
            self._saved_shifts = shifts
        except OSError as error:
            logger.warning("cannot save agreement budgets to %s: %s", self.state_path, error)

    def _read_shifts(self) -> dict[str, float]:
        if self.state_path is None or not self.state_path.exists():
            return {}
        try:
            data = json.loads(self.state_path.read_text())
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, want {STATE_FORMAT}")
            return {str(model_id): float(shift) for model_id, shift in data["shifts"].items()
                    if math.isfinite(float(shift))}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            logger.warning("ignoring agreement budgets in %s (%s): starting from the configured thresholds",
                           self.state_path, error)
            return {}

    def budgets(self) -> dict[str, AgreementBudget]:
        """The budgets made so far, by model id."""
        with self._lock:
            return dict(self._budgets)

    def counters(self) -> dict[str, float]:
        """Heartbeat counters once any budget has counted a token: tokens and expected disagreements over all
        models (cumulative), and the shift of the budget that has counted most."""
        budgets = [budget for budget in self.budgets().values() if budget.tokens]
        if not budgets:
            return {}
        busiest = max(budgets, key=lambda budget: budget.tokens)
        return {"budget_tokens": float(sum(b.tokens for b in budgets)),
                "budget_expected_disagreements": sum(b.expected_disagreements for b in budgets),
                "budget_shift": busiest.shift}
