"""Paired comparisons over the same tasks: the bootstrap confidence interval of a mean difference."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)


def paired_bootstrap(first: Sequence[float], second: Sequence[float], *, resamples: int = 5000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """(mean of first - second, half-width of its `level` percentile interval), resampling tasks as pairs.

    Raises ValueError for unequal or empty inputs.
    """
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if not len(a) or len(a) != len(b):
        raise ValueError("paired samples must be non-empty and of equal length")
    differences = a - b
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), size=(resamples, len(differences)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(differences.mean()), float((high - low) / 2)
