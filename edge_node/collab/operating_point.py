"""The collaborative operating point: exit thresholds chosen on the calibration split for cloud-edge generation.

Standalone early exit must keep the exited tokens right (the calibrated policy asks >= 0.92 of the
exits to agree with the full model). In collaborative mode every token that does not exit comes
from the full model, so what matters is the agreement over all generated tokens:
(positions not exiting + exits that agree) / positions. Maximising the exit fraction (fewer cloud
requests) under that constraint gives lower thresholds than the standalone policy. The scoring
rules (logistic weights) are the model's calibrated ones; only the thresholds move. Pure numpy.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from edge_node.collab.agreement_budget import AgreementBudget
from models.exits.calibration import TargetChoice, cross_validated_target, scores_of
from models.exits.policy import ExitPolicy, ExitRule

logger = logging.getLogger(__name__)

_DISABLED = 2.0  # above any score in (0, 1]: the exit never fires


@dataclass(frozen=True, slots=True)
class CollabPoint:
    policy: ExitPolicy
    exit_fraction: float  # share of calibration positions that exit at the edge
    agreement: float  # share of all calibration positions equal to the full model's token


def overall_agreement(rules: tuple[ExitRule, ...], thresholds: tuple[float, ...], scores: dict[int, np.ndarray],
                      correct: dict[int, np.ndarray]) -> tuple[float, float]:
    """(exit fraction, agreement over every position) when non-exits are answered by the full model."""
    count = next(iter(correct.values())).shape[0]
    remaining = np.ones(count, dtype=bool)
    exited = wrong = 0
    for rule, threshold in zip(rules, thresholds, strict=True):
        exits = remaining & (scores[rule.exit_layer] >= threshold)
        exited += int(exits.sum())
        wrong += int((exits & ~correct[rule.exit_layer]).sum())
        remaining &= ~exits
    return exited / max(count, 1), 1.0 - wrong / max(count, 1)


def choose_collab_point(policy: ExitPolicy, features: dict[int, np.ndarray], correct: dict[int, np.ndarray],
                        target_agreement: float, candidates: int = 24) -> CollabPoint:
    """Max exit fraction with overall agreement >= target, over a grid of score quantiles per exit."""
    rules = policy.rules
    scores = {rule.exit_layer: scores_of(rule, features[rule.exit_layer]) for rule in rules}
    grids = [[*np.unique(np.quantile(scores[rule.exit_layer], np.linspace(0.3, 0.995, candidates))).tolist(), _DISABLED]
             for rule in rules]
    best = (0.0, 1.0, tuple(_DISABLED for _ in rules))
    for thresholds in itertools.product(*grids):
        fraction, agreement = overall_agreement(rules, thresholds, scores, correct)
        if agreement >= target_agreement and (fraction, agreement) > best[:2]:
            best = (fraction, agreement, thresholds)
    chosen = ExitPolicy(tuple(ExitRule(r.exit_layer, r.weights, r.bias, t) for r, t in zip(rules, best[2], strict=True)))
    logger.info("collaborative operating point: exit fraction %.3f, agreement %.3f, thresholds %s",
                best[0], best[1], best[2])
    return CollabPoint(chosen, best[0], best[1])


def collab_counts(policy: ExitPolicy, features: dict[int, np.ndarray], correct: dict[int, np.ndarray]) -> tuple[int, int, int]:
    """(exits, positions equal to the full model's token, positions): the collaborative requirement is on every token."""
    count = next(iter(correct.values())).shape[0]
    scores = {rule.exit_layer: scores_of(rule, features[rule.exit_layer]) for rule in policy.rules}
    fraction, agreement = overall_agreement(policy.rules, tuple(r.threshold for r in policy.rules), scores, correct)
    return round(fraction * count), round(agreement * count), count


def cross_validated_collab_point(policy: ExitPolicy, features: dict[int, np.ndarray], correct: dict[int, np.ndarray],
                                 groups: np.ndarray, required_agreement: float,
                                 targets: tuple[float, ...] = (0.88, 0.89, 0.90, 0.91, 0.92, 0.93)
                                 ) -> tuple[CollabPoint, TargetChoice]:
    """The operating point at the calibration target that keeps `required_agreement` out of fold (5 folds of
    sequences, models/exits/calibration.py `cross_validated_target`), fitted on the whole calibration split."""
    choice = cross_validated_target(
        features, correct, groups, required_agreement, targets,
        fit=lambda f, c, target: choose_collab_point(policy, f, c, target).policy, measure=collab_counts)
    return choose_collab_point(policy, features, correct, choice.target_agreement), choice


@dataclass(frozen=True, slots=True)
class BudgetChoice:
    target: float  # the agreement budget's target the edge runs with
    simulated: list[dict[str, float]]  # per candidate target: exit fraction and agreement over the split, in order


def simulate_budget(policy: ExitPolicy, features: dict[int, np.ndarray], correct: dict[int, np.ndarray],
                    target: float, step: float = 1.0) -> tuple[float, float]:
    """(exit fraction, agreement over every position) of collaborative decoding over these positions in
    order, with an AgreementBudget moving `policy`'s thresholds as the edge would."""
    rules = policy.rules
    scores = [scores_of(rule, features[rule.exit_layer]) for rule in rules]
    agrees = [correct[rule.exit_layer] for rule in rules]
    base = tuple(rule.threshold for rule in rules)
    budget = AgreementBudget(target, step)
    count = scores[0].shape[0] if rules else 0
    exited = wrong = 0
    for position in range(count):
        exit_score = None
        for index, threshold in enumerate(budget.thresholds(base)):
            if scores[index][position] >= threshold:
                exit_score = float(scores[index][position])
                exited += 1
                wrong += int(not agrees[index][position])
                break
        budget.record(exit_score)
    return exited / max(count, 1), 1.0 - wrong / max(count, 1)


def choose_budget_target(policy: ExitPolicy, features: dict[int, np.ndarray], correct: dict[int, np.ndarray],
                         required_agreement: float,
                         targets: tuple[float, ...] = (0.90, 0.905, 0.91, 0.915, 0.92, 0.93)) -> BudgetChoice:
    """The lowest budget target whose simulated agreement on the calibration split meets the requirement
    (the budget's own estimate is a little optimistic where thresholds were fitted; the margin is measured)."""
    rows = []
    for target in targets:
        fraction, agreement = simulate_budget(policy, features, correct, target)
        rows.append({"target": target, "exit_fraction": fraction, "agreement": agreement})
    meeting = [row for row in rows if row["agreement"] >= required_agreement]
    chosen = meeting[0]["target"] if meeting else targets[-1]
    logger.info("agreement budget target %.3f: %s", chosen, rows)
    return BudgetChoice(chosen, rows)
