"""Link profiles between a node and the broker, and the pure schedule that says when a chunk leaves.

A direction of a link is a serializer at `rate` followed by a fixed propagation `delay`: a chunk that
arrives at time t is ready at t + delay and then waits for the line, which sends `rate` bytes per
second. A token bucket of `burst_bytes` lets a chunk leave up to burst_bytes/rate ahead of strict
serialization, so a lone small message (an MQTT request or ack) pays only the delay. The schedule is
kept in virtual time (`line_free_s`), not in the times the proxy actually managed to send: a late
timer never lowers the long-run rate and a burst never raises it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from runtime.settings import ConfigError

logger = logging.getLogger(__name__)

MBIT_BYTES_PER_S = 1e6 / 8  # 1 Mbit/s in bytes per second
DEFAULT_BURST_BYTES = 16 * 1024  # a few packets: lone small messages leave at once, long runs keep the rate


@dataclass(frozen=True, slots=True)
class Direction:
    """One direction of a link."""

    delay_s: float = 0.0  # one-way propagation delay added to every byte
    rate_bytes_per_s: float = 0.0  # serialization rate; 0 = unlimited
    burst_bytes: int = DEFAULT_BURST_BYTES  # token-bucket depth: bytes that may leave ahead of the rate

    def __post_init__(self) -> None:
        if not 0 <= self.delay_s <= 10:
            raise ValueError(f"delay_s {self.delay_s} must be between 0 and 10")
        if self.rate_bytes_per_s < 0:
            raise ValueError(f"rate_bytes_per_s {self.rate_bytes_per_s} must be >= 0")
        if self.burst_bytes < 0:
            raise ValueError(f"burst_bytes {self.burst_bytes} must be >= 0")

    @property
    def rate_mbit_s(self) -> float:
        return self.rate_bytes_per_s / MBIT_BYTES_PER_S


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """A node's link to the broker: `up` is node -> broker, `down` is broker -> node."""

    name: str
    up: Direction
    down: Direction

    @property
    def is_direct(self) -> bool:
        """No delay and no rate limit in either direction: connect straight to the broker."""
        return self.up == Direction() and self.down == Direction()

    @property
    def rtt_s(self) -> float:
        """Round trip the link adds to a small message and its answer."""
        return self.up.delay_s + self.down.delay_s


def _mbit(rate_mbit_s: float) -> float:
    return rate_mbit_s * MBIT_BYTES_PER_S


PROFILES: dict[str, LinkProfile] = {
    profile.name: profile
    for profile in (
        LinkProfile("lan", Direction(), Direction()),
        LinkProfile("wan", Direction(0.025, _mbit(20)), Direction(0.025, _mbit(20))),
        LinkProfile("cellular", Direction(0.040, _mbit(5)), Direction(0.040, _mbit(20))),
    )
}


def get_profile(name: str, key: str = "bus.link_profile") -> LinkProfile:
    """The profile called `name`. Raises ConfigError naming `key` and the known profiles."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"{key}: unknown link profile {name!r} (known: {', '.join(PROFILES)})") from None


@dataclass(frozen=True, slots=True)
class Departure:
    """When a chunk leaves the emulated link, and the schedule state for the next chunk."""

    departure_s: float  # when the chunk's last byte reaches the far side
    line_free_s: float  # virtual time the line finishes serializing this chunk (next chunk's state)


def schedule_chunk(direction: Direction, arrival_s: float, size_bytes: int, line_free_s: float) -> Departure:
    """Departure of a chunk of `size_bytes` that arrived at `arrival_s` on a line busy until `line_free_s`.

    departure = max(ready, line finished - burst/rate), with ready = arrival + delay and line finished =
    max(ready, line_free_s) + size/rate. Departures never go backwards when arrivals do not, so
    chunks keep their order. Pass line_free_s = 0 (or any past time) for the first chunk.
    """
    assert size_bytes >= 0, f"size_bytes {size_bytes} < 0"
    ready_s = arrival_s + direction.delay_s
    if direction.rate_bytes_per_s <= 0:
        return Departure(ready_s, ready_s)
    finished_s = max(ready_s, line_free_s) + size_bytes / direction.rate_bytes_per_s
    allowance_s = direction.burst_bytes / direction.rate_bytes_per_s
    return Departure(max(ready_s, finished_s - allowance_s), finished_s)
