"""Choosing the miner's threshold on training data: the cheapest cloud share that keeps the quality.

Pure: given P(hard) per training query and the edge's and the cloud's scores on it, every threshold
gives a cloud share and a mean quality; the chosen one is the lowest cloud share whose quality is at
least `target_quality_ratio` of cloud-only, within `max_cloud_ratio`; if none reaches the target,
the best quality within `max_cloud_ratio`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from routing.stats import paired_bootstrap

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    threshold: float  # P(hard) at or above which a query goes to the cloud
    cloud_query_ratio: float
    quality: float  # mean quality with this routing
    quality_ratio: float  # quality / cloud-only quality
    reached_target: bool


def routed_quality(to_cloud: np.ndarray, edge_scores: np.ndarray, cloud_scores: np.ndarray) -> np.ndarray:
    """(N,) per-query quality when `to_cloud` (N, bool) queries are answered by the cloud."""
    return np.where(to_cloud, cloud_scores, edge_scores)


def quality_ratio(quality: float, cloud_quality: float) -> float:
    """quality / cloud-only quality; 1.0 when the cloud scores 0 too (nothing to lose)."""
    return quality / cloud_quality if cloud_quality > 0 else 1.0


def cheapest_reaching(candidates: Sequence[T], share: Callable[[T], float], ratio: Callable[[T], float], *,
                      target_quality_ratio: float, max_share: float) -> tuple[T, bool]:
    """The selection rule every router's operating point follows: of the candidates within `max_share` (or the
    cheapest, if none is), the one with the lowest share whose quality ratio reaches the target (True), else the
    best quality ratio (False); ties go to the better ratio, then the lower share."""
    assert candidates, "need at least one candidate"
    affordable = [c for c in candidates if share(c) <= max_share + 1e-12] or [min(candidates, key=share)]
    reaching = [c for c in affordable if ratio(c) >= target_quality_ratio]
    if reaching:
        return min(reaching, key=lambda c: (share(c), -ratio(c))), True
    return max(affordable, key=lambda c: (ratio(c), -share(c))), False


def random_expectation(edge_scores: np.ndarray, cloud_scores: np.ndarray, cloud_share: float) -> np.ndarray:
    """(N,) random routing's expected quality per query at `cloud_share`: (1 - p) x edge + p x cloud.

    Exact for greedy answers (each draw scores as the edge's or the cloud's answer), and without the
    coin's own variance, which one drawn random run would add to a paired comparison.
    """
    return (1.0 - cloud_share) * np.asarray(edge_scores, dtype=float) + cloud_share * np.asarray(cloud_scores, dtype=float)


@dataclass(frozen=True, slots=True)
class VersusRandom:
    quality_ratio: float  # the routing's quality / cloud-only quality
    random_quality_ratio: float  # random routing's at the same cloud share (its expectation)
    difference: float  # quality_ratio - random_quality_ratio, in cloud-only units
    ci95_halfwidth: float  # paired bootstrap over queries
    cloud_query_ratio: float


def versus_random(to_cloud: Sequence[bool], edge_scores: Sequence[float], cloud_scores: Sequence[float], *,
                  resamples: int = 5000, seed: int = 0) -> VersusRandom:
    """A routing against random routing at its own cloud share, paired over the same queries.

    Raises ValueError for empty or unequal inputs.
    """
    routed = np.asarray(to_cloud, dtype=bool)
    edge, cloud = np.asarray(edge_scores, dtype=float), np.asarray(cloud_scores, dtype=float)
    if not len(routed) or not len(routed) == len(edge) == len(cloud):
        raise ValueError("need equally many routes, edge scores and cloud scores, at least one")
    share = float(routed.mean())
    cloud_mean = float(cloud.mean()) or 1.0  # a cloud that scores 0 everywhere: compare in raw units
    quality, random = routed_quality(routed, edge, cloud), random_expectation(edge, cloud, share)
    difference, halfwidth = paired_bootstrap(quality / cloud_mean, random / cloud_mean, resamples=resamples, seed=seed)
    return VersusRandom(quality_ratio(float(quality.mean()), float(cloud.mean())),
                        quality_ratio(float(random.mean()), float(cloud.mean())), difference, halfwidth, share)


def choose_operating_point(probability_hard: Sequence[float], edge_scores: Sequence[float],
                           cloud_scores: Sequence[float], *, target_quality_ratio: float = 0.95,
                           max_cloud_ratio: float = 0.5) -> OperatingPoint:
    """The threshold to deploy. Raises ValueError for empty or unequal inputs."""
    probabilities, edge, cloud = (np.asarray(x, dtype=float) for x in (probability_hard, edge_scores, cloud_scores))
    if not len(probabilities) or not len(probabilities) == len(edge) == len(cloud):
        raise ValueError("need equally many probabilities, edge scores and cloud scores, at least one")
    cloud_mean = float(cloud.mean())
    # Candidate thresholds: just above every probability (and 0: everything to the cloud).
    candidates = sorted({1.0 + 1e-9, 0.0, *(float(p) + 1e-12 for p in probabilities)}, reverse=True)
    points = []
    for threshold in candidates:
        to_cloud = probabilities >= threshold
        quality = float(routed_quality(to_cloud, edge, cloud).mean())
        points.append(OperatingPoint(min(threshold, 1.0), float(to_cloud.mean()), quality,
                                     quality_ratio(quality, cloud_mean), False))
    best, reached = cheapest_reaching(points, lambda p: p.cloud_query_ratio, lambda p: p.quality_ratio,
                                      target_quality_ratio=target_quality_ratio, max_share=max_cloud_ratio)
    return replace(best, reached_target=reached)
