"""Which loaded models to evict so a new one fits: pure logic over snapshots of the cache's records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One model the cache holds, as seen at one moment (times are the cache clock's seconds)."""

    model_id: str
    size_bytes: int  # the estimate while loading, the measured size once loaded
    loaded_at: float | None  # None while loading
    last_used_at: float  # when a request last acquired or released it
    expires_at: float | None  # None while loading, in use, pinned, or kept forever
    pinned: bool
    in_use: int  # requests holding it (or waiting on its load)
    loading: bool
    unloading: bool = False  # deregistered, memory not yet released; counts against the budget

    @property
    def evictable(self) -> bool:
        return not (self.pinned or self.loading or self.unloading or self.in_use > 0)


def choose_victims(
    records: Sequence[ModelRecord], needed_bytes: int, budget_bytes: int, max_models: int
) -> tuple[str, ...] | None:
    """Which idle models to evict so one more model of `needed_bytes` fits; `()` if it fits already.

    Returns None when evicting every evictable model would still not make room. Victims are taken
    least-recently-used first until the newcomer fits; then any victim whose eviction turned out
    unnecessary (a small old model followed by a large one) is spared, newest first, so only as many
    models as needed are evicted and the more recently used ones stay.
    """

    def fits(evicted_ids: set[str]) -> bool:
        kept = [r for r in records if r.model_id not in evicted_ids]
        used = sum(r.size_bytes for r in kept)
        return used + needed_bytes <= budget_bytes and len(kept) + 1 <= max_models

    if fits(set()):
        return ()
    candidates = sorted((r for r in records if r.evictable), key=lambda r: (r.last_used_at, r.model_id))
    victims: list[str] = []
    for candidate in candidates:
        victims.append(candidate.model_id)
        if fits(set(victims)):
            break
    else:
        return None
    for spare in reversed(victims[:-1]):
        trial = [v for v in victims if v != spare]
        if fits(set(trial)):
            victims = trial
    return tuple(victims)
