"""Learned figures with their uncertainty, and the optimism that makes the center explore: pure, no I/O.

The center learns a per-token time for every (node, model) and a quality for every (model, task
type) from results. A pair it has never measured, or not for a while, must not look worse than it
may be, or it never gets the work that would measure it (an edge that never gets a task keeps a
wrong estimate forever). So the scheduler plans with an optimistic figure: the estimate improved by
a bonus that shrinks as samples accumulate and grows back as they age.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Estimate:
    """An exponentially weighted mean and variance of observations."""

    mean: float
    variance: float  # of single observations around the mean
    samples: int
    updated_at: float  # clock reading of the last observation, seconds

    def effective_samples(self, now: float, half_life_s: float) -> float:
        """Samples, halved for every `half_life_s` since the last observation (stale figures count less)."""
        age_s = max(0.0, now - self.updated_at)
        return self.samples * 0.5 ** (age_s / half_life_s) if half_life_s > 0 else float(self.samples)

    def stderr(self, now: float, half_life_s: float) -> float:
        """Standard error of the mean (inf with no effective samples)."""
        samples = self.effective_samples(now, half_life_s)
        return math.sqrt(self.variance / samples) if samples > 1e-9 else math.inf


@dataclass(frozen=True, slots=True)
class Exploration:
    """How optimistic the scheduler is about what it has not measured (well)."""

    bonus: float = 0.3  # relative improvement granted to a pair with no samples; shrinks as 1/sqrt(1 + n)
    half_life_s: float = 600.0  # an observation counts half after this long without a new one
    weight: float = 0.3  # weight of a new observation in the moving mean


def observe(previous: Estimate | None, value: float, now: float, weight: float = 0.3) -> Estimate:
    """The estimate after one more observation."""
    if previous is None:
        return Estimate(value, 0.0, 1, now)
    delta = value - previous.mean
    mean = previous.mean + weight * delta
    variance = (1.0 - weight) * (previous.variance + weight * delta * delta)
    return Estimate(mean, variance, previous.samples + 1, now)


def bonus_for(estimate: Estimate | None, now: float, exploration: Exploration) -> float:
    """Relative optimism in [0, exploration.bonus]: full for the unmeasured, ~1/sqrt(n) for the measured."""
    samples = 0.0 if estimate is None else estimate.effective_samples(now, exploration.half_life_s)
    return exploration.bonus / math.sqrt(1.0 + samples)


def planned_time(estimate: Estimate | None, prior_s: float, now: float, exploration: Exploration) -> float:
    """Seconds (per token) the scheduler plans with: the measured mean, else the prior, made optimistic."""
    base = estimate.mean if estimate is not None else prior_s
    return base * (1.0 - bonus_for(estimate, now, exploration))


def planned_quality(estimate: Estimate | None, prior: float, now: float, exploration: Exploration) -> float:
    """Quality in [0, 1] the scheduler plans with: the measured mean, else the prior, made optimistic."""
    base = estimate.mean if estimate is not None else prior
    return min(1.0, base * (1.0 + bonus_for(estimate, now, exploration)))
