"""Fit the exit policy on the calibration split: a logistic score per exit, then thresholds.

Inputs are plain arrays: features[layer] (N, F) and correct[layer] (N,) = head argmax equals the
full model's token. The policy exits at the first head whose score passes its threshold; the
thresholds maximise the share of positions exiting subject to overall agreement >= a target.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.exits.policy import ExitFeatures, ExitPolicy, ExitRule

logger = logging.getLogger(__name__)

_DISABLED = 2.0  # threshold above any score in (0, 1]: the exit never fires


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    exit_fraction: float  # share of positions exiting at some head
    agreement: float  # share of exited positions whose token equals the full model's
    per_layer: dict[int, tuple[float, float]]  # layer -> (exit fraction, agreement there)


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-2, steps: int = 50) -> tuple[np.ndarray, float]:
    """Newton-Raphson logistic regression on standardized features; returns raw-space (weights, bias)."""
    assert features.ndim == 2 and features.shape[0] == labels.shape[0], "features (N, F) and labels (N,) mismatch"
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = np.hstack([(features - mean) / std, np.ones((features.shape[0], 1))])  # (N, F + 1)
    y = labels.astype(np.float64)
    w = np.zeros(x.shape[1])
    penalty = l2 * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -60, 60)))
        gradient = x.T @ (p - y) + penalty @ w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + penalty + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[:-1] / std
    bias = float(w[-1] - (w[:-1] * mean / std).sum())
    return weights, bias


def scores_of(rule: ExitRule, features: np.ndarray) -> np.ndarray:
    """Vectorised ExitRule.score over (N, F) features."""
    if rule.is_identity():
        return features[:, 0]
    z = features @ np.asarray(rule.weights) + rule.bias
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def evaluate(policy: ExitPolicy, features: dict[int, np.ndarray], correct: dict[int, np.ndarray]) -> OperatingPoint:
    """Exit fraction and agreement of `policy` on precomputed features (same maths as should_exit)."""
    count = next(iter(correct.values())).shape[0]
    remaining = np.ones(count, dtype=bool)
    exited_total, agreed_total = 0, 0
    per_layer: dict[int, tuple[float, float]] = {}
    for rule in policy.rules:
        exits = remaining & (scores_of(rule, features[rule.exit_layer]) >= rule.threshold)
        n_exit, n_agree = int(exits.sum()), int((exits & correct[rule.exit_layer]).sum())
        per_layer[rule.exit_layer] = (n_exit / max(count, 1), n_agree / n_exit if n_exit else 1.0)
        exited_total, agreed_total = exited_total + n_exit, agreed_total + n_agree
        remaining &= ~exits
    return OperatingPoint(exited_total / max(count, 1), agreed_total / exited_total if exited_total else 1.0, per_layer)


def choose_thresholds(rules: tuple[ExitRule, ...], features: dict[int, np.ndarray], correct: dict[int, np.ndarray],
                      target_agreement: float, candidates: int = 24) -> ExitPolicy:
    """Grid search over score quantiles: max exit fraction with agreement >= target (ties: higher agreement)."""
    scores = {rule.exit_layer: scores_of(rule, features[rule.exit_layer]) for rule in rules}
    grids = []
    for rule in rules:
        quantiles = np.quantile(scores[rule.exit_layer], np.linspace(0.5, 0.995, candidates))
        grids.append([*np.unique(quantiles).tolist(), _DISABLED])
    count = next(iter(correct.values())).shape[0]
    best: tuple[float, float, tuple[float, ...]] = (-1.0, 0.0, tuple(_DISABLED for _ in rules))
    for thresholds in itertools.product(*grids):
        remaining = np.ones(count, dtype=bool)
        exited, agreed = 0, 0
        for rule, threshold in zip(rules, thresholds, strict=True):
            exits = remaining & (scores[rule.exit_layer] >= threshold)
            exited += int(exits.sum())
            agreed += int((exits & correct[rule.exit_layer]).sum())
            remaining &= ~exits
        if exited == 0:
            continue
        fraction, agreement = exited / count, agreed / exited
        if agreement >= target_agreement and (fraction, agreement) > best[:2]:
            best = (fraction, agreement, thresholds)
    return ExitPolicy(tuple(ExitRule(r.exit_layer, r.weights, r.bias, t) for r, t in zip(rules, best[2], strict=True)))


def fit_rules(features: dict[int, np.ndarray], correct: dict[int, np.ndarray], learned: bool) -> tuple[ExitRule, ...]:
    """Per-exit scoring rules: logistic on all features if `learned`, else the plain top probability."""
    identity = (1.0,) + (0.0,) * (len(ExitFeatures.names()) - 1)
    rules = []
    for layer in sorted(features):
        if learned:
            weights, bias = fit_logistic(features[layer], correct[layer])
            rules.append(ExitRule(layer, tuple(float(w) for w in weights), bias, _DISABLED))
        else:
            rules.append(ExitRule(layer, identity, 0.0, _DISABLED))
    return tuple(rules)


def calibrate(features: dict[int, np.ndarray], correct: dict[int, np.ndarray], target_agreement: float,
              learned: bool = True) -> ExitPolicy:
    """Fit scoring rules and thresholds on one split (the calibration split, never held-out)."""
    return choose_thresholds(fit_rules(features, correct, learned), features, correct, target_agreement)


@dataclass(frozen=True, slots=True)
class TargetChoice:
    target_agreement: float  # the calibration target the policy is fitted at
    cross_validated: list[dict[str, float]]  # per candidate target: pooled out-of-fold exit fraction and agreement


# fit(features, correct, target) -> policy; measure(policy, features, correct) -> (exits, agreeing, out of)
Fit = Callable[[dict[int, np.ndarray], dict[int, np.ndarray], float], ExitPolicy]
Measure = Callable[[ExitPolicy, dict[int, np.ndarray], dict[int, np.ndarray]], tuple[int, int, int]]


def exit_agreement_counts(policy: ExitPolicy, features: dict[int, np.ndarray],
                          correct: dict[int, np.ndarray]) -> tuple[int, int, int]:
    """(exits, exits that agree, exits): the standalone requirement is on the exited tokens."""
    count = next(iter(correct.values())).shape[0]
    point = evaluate(policy, features, correct)
    exited = round(point.exit_fraction * count)
    return exited, round(point.agreement * exited), exited


def cross_validated_target(features: dict[int, np.ndarray], correct: dict[int, np.ndarray], groups: np.ndarray,
                           required_agreement: float, targets: tuple[float, ...], folds: int = 5,
                           learned: bool = True, fit: Fit | None = None, measure: Measure | None = None) -> TargetChoice:
    """The calibration target whose policy keeps `required_agreement` on data it was not fitted on.

    A policy fitted at target t on a split meets t there by construction and less elsewhere (or
    more): the margin is measured instead of guessed. Sequences (`groups`, one id per position) are
    dealt into `folds`; for each target, policies are fitted on all folds but one and applied to that
    one, and exits and agreements are pooled over the folds. Chosen: the target with the most
    out-of-fold exits among those whose pooled agreement meets the requirement (the highest target
    if none does). `fit`/`measure` default to the standalone policy (`calibrate`, agreement of the
    exits); the collaborative operating point passes its own. Pure numpy.
    """
    assert groups.shape[0] == next(iter(correct.values())).shape[0], "one group id per position"
    fit = fit or (lambda f, c, target: calibrate(f, c, target, learned))
    measure = measure or exit_agreement_counts
    fold_of_group = {group: index % folds for index, group in enumerate(np.unique(groups))}
    fold = np.array([fold_of_group[group] for group in groups])
    results = []
    for target in targets:
        exited = agreeing = out_of = 0
        for k in range(folds):
            fitted, held = fold != k, fold == k
            policy = fit({layer: f[fitted] for layer, f in features.items()},
                         {layer: c[fitted] for layer, c in correct.items()}, target)
            counts = measure(policy, {layer: f[held] for layer, f in features.items()},
                             {layer: c[held] for layer, c in correct.items()})
            exited, agreeing, out_of = exited + counts[0], agreeing + counts[1], out_of + counts[2]
        results.append({"target_agreement": float(target), "exit_fraction": exited / len(groups),
                        "agreement": agreeing / out_of if out_of else 1.0})
    meeting = [r for r in results if r["agreement"] >= required_agreement]
    chosen = max(meeting, key=lambda r: (r["exit_fraction"], r["target_agreement"])) if meeting else results[-1]
    logger.info("cross-validated calibration target %.3f: %s", chosen["target_agreement"], results)
    return TargetChoice(chosen["target_agreement"], results)
