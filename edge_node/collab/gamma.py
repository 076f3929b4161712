"""How many tokens to draft before asking the cloud to verify (speculative decoding's gamma), per session.

Pure: `best_gamma` maximises expected tokens per second from measured figures; `GammaTracker` keeps
those figures for one session (exponentially weighted, with a prior) and is fed by the stepper. The
formula is written out in docs/collaboration.md ("Adaptive gamma").

A round drafts g tokens (g edge passes), uploads their rows and waits one round trip plus the
cloud's verification. With a per-draft acceptance probability a (drafts independent), the round
yields (1 - a^g) / (1 - a) tokens (the accepted prefix plus the cloud's correction, or g when all
stand), and takes g * edge_step + rtt + cloud_fixed + g * (cloud_position + upload_position).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GammaInputs:
    acceptance: float  # probability that one draft token is accepted, in [0, 1]
    edge_step_ms: float  # one draft pass through the edge's layers [0, k)
    rtt_ms: float  # network round trip of a verification (request out, verdict back), cloud time excluded
    cloud_fixed_ms: float = 0.0  # cloud time of a verification that does not grow with g
    cloud_position_ms: float = 0.0  # cloud time per verified position
    upload_position_ms: float = 0.0  # link time of one position's row (bytes / rate)


def smoothed(current: float | None, value: float, weight: float) -> float:
    """An exponentially weighted mean with `weight` on the newest value (the value itself when there is none yet)."""
    return value if current is None else (1 - weight) * current + weight * value


def expected_tokens(acceptance: float, gamma: int) -> float:
    """Tokens one round of `gamma` drafts yields: sum_{i<gamma} a^i = (1 - a^gamma) / (1 - a)."""
    assert gamma >= 1, "gamma must be >= 1"
    assert 0.0 <= acceptance <= 1.0, f"acceptance {acceptance} outside [0, 1]"
    if acceptance >= 1.0:
        return float(gamma)
    return (1.0 - acceptance**gamma) / (1.0 - acceptance)


def round_ms(inputs: GammaInputs, gamma: int) -> float:
    """Wall time of one round of `gamma` drafts (no overlap of drafting and verification)."""
    per_position = inputs.edge_step_ms + inputs.cloud_position_ms + inputs.upload_position_ms
    return gamma * per_position + inputs.rtt_ms + inputs.cloud_fixed_ms


def tokens_per_s(inputs: GammaInputs, gamma: int) -> float:
    return expected_tokens(inputs.acceptance, gamma) / max(round_ms(inputs, gamma), 1e-9) * 1e3


def best_gamma(inputs: GammaInputs, gamma_max: int, gamma_min: int = 1) -> int:
    """The gamma in [gamma_min, gamma_max] with the most expected tokens per second (the smaller on a tie)."""
    assert 1 <= gamma_min <= gamma_max, f"need 1 <= gamma_min ({gamma_min}) <= gamma_max ({gamma_max})"
    best, best_rate = gamma_min, tokens_per_s(inputs, gamma_min)
    for gamma in range(gamma_min + 1, gamma_max + 1):
        rate = tokens_per_s(inputs, gamma)
        if rate > best_rate * (1 + 1e-9):
            best, best_rate = gamma, rate
    return best


class GammaTracker:
    """One session's measured figures and its next gamma.

    Acceptance is estimated as accepted / (accepted + rejections) over decayed counts (a geometric
    prefix length's estimate), starting from a prior worth `prior_weight` drafts; times are
    exponentially weighted means with weight `smoothing` on the newest round.
    """

    def __init__(self, gamma_max: int, *, gamma_initial: int = 4, prior_acceptance: float = 0.7,
                 prior_weight: float = 4.0, decay: float = 0.9, smoothing: float = 0.3) -> None:
        assert 1 <= gamma_initial <= gamma_max, "gamma_initial must lie in 1..gamma_max"
        self.gamma_max = gamma_max
        self.gamma = gamma_initial
        self.decay, self.smoothing = decay, smoothing
        self._accepted = prior_acceptance * prior_weight
        self._rejected = (1.0 - prior_acceptance) * prior_weight
        self.edge_step_ms: float | None = None
        self.rtt_ms: float | None = None
        self.cloud_ms: float | None = None  # per verification (treated as fixed: a few rows cost about one)
        self.rounds = 0

    @property
    def acceptance(self) -> float:
        return self._accepted / (self._accepted + self._rejected)

    def observe(self, drafts: int, accepted: int, edge_ms: float, round_trip_ms: float, cloud_ms: float, *,
                counted: int | None = None, passes: int | None = None) -> int:
        """Fold in one round (its drafts, how many stood, drafting / request-to-verdict / cloud times); the next gamma.

        `counted`: the leading drafts whose fate measures the acceptance gamma bounds (default all). A
        round that ends at an unsure draft by choice counts only the sure drafts before it: the unsure
        one would end the round whatever gamma is. `passes`: edge passes `edge_ms` covered (default
        `drafts`; fewer when some drafts were made while the previous verification was in flight).
        """
        counted = drafts if counted is None else counted
        assert drafts >= 1 and 0 <= accepted <= drafts, f"accepted {accepted} outside 0..{drafts}"
        assert 0 <= counted <= drafts, f"counted {counted} outside 0..{drafts}"
        self.rounds += 1
        self._accepted = self._accepted * self.decay + min(accepted, counted)
        self._rejected = self._rejected * self.decay + (1 if accepted < counted else 0)
        passes = drafts if passes is None else passes
        if passes > 0:
            self.edge_step_ms = self._mean(self.edge_step_ms, edge_ms / passes)
        self.rtt_ms = self._mean(self.rtt_ms, max(0.0, round_trip_ms - cloud_ms))
        self.cloud_ms = self._mean(self.cloud_ms, cloud_ms)
        self.gamma = best_gamma(self.inputs(), self.gamma_max)
        return self.gamma

    def inputs(self) -> GammaInputs:
        return GammaInputs(self.acceptance, self.edge_step_ms or 0.0, self.rtt_ms or 0.0, self.cloud_ms or 0.0)

    def _mean(self, current: float | None, value: float) -> float:
        return smoothed(current, value, self.smoothing)
