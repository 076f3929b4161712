"""Which sessions to forget: TTL expiry and least-recently-used eviction under a memory cap (pure, no torch)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionFigures:
    session_id: str
    last_used_s: float  # clock reading of the last chunk or token request
    bytes_held: int  # hidden states + KV cache


def expired(sessions: Iterable[SessionFigures], now_s: float, ttl_s: float) -> list[str]:
    """Sessions idle for at least `ttl_s`."""
    return [s.session_id for s in sessions if now_s - s.last_used_s >= ttl_s]


def lru_victims(sessions: Iterable[SessionFigures], cap_bytes: int, protect: str | None = None) -> list[str]:
    """Least recently used sessions to drop until the rest fit under `cap_bytes`.

    `protect` (the session being served right now) is never chosen: evicting the context we are
    about to use would only make the edge re-upload it at once.
    """
    ordered = sorted(sessions, key=lambda s: s.last_used_s)
    total = sum(s.bytes_held for s in ordered)
    victims = []
    for session in ordered:
        if total <= cap_bytes:
            break
        if session.session_id == protect:
            continue
        victims.append(session.session_id)
        total -= session.bytes_held
    return victims
