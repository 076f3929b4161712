"""Malformed payloads for the fleet's topics: what `benchmarks.fuzz` throws at every node.

Each generator takes a seeded `random.Random` and, where it mutates real traffic, a payload captured
on the same topic. Kinds: random bytes, truncated msgpack, wrong-schema msgpack (fields of the wrong
type, missing, unknown, another message's tag or version), oversized, NaN/inf in every number, and
valid messages of another type. Replays and forged births/deaths are the benchmark's own (they need
the live fleet). msgpack lives here because no module outside `broker/` may call it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import msgpack

from broker.messages.codec import Message

logger = logging.getLogger(__name__)

Generator = Callable[[random.Random, bytes], bytes]  # (rng, a real payload of the topic) -> malformed payload

_ODD_VALUES: tuple[Any, ...] = (None, "", "x" * 300, -1, 0, 2**63 - 1, -(2**63), 2**64 - 1, 1e308, -0.0,
                                float("nan"), float("inf"), float("-inf"), True, b"\xff\x00", [], {}, [None],
                                {"t": "task"}, "../../etc/passwd", "\u0000\ud7ff\U0010ffff")


def _unpack(payload: bytes) -> dict[str, Any] | None:
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:  # the seed may itself be garbage (a captured malformed message)
        return None
    return body if isinstance(body, dict) else None


def _pack(body: Any) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def random_bytes(rng: random.Random, seed: bytes) -> bytes:
    return rng.randbytes(rng.choice((0, 1, 2, 7, 64, 1024, 9000)))


def truncated(rng: random.Random, seed: bytes) -> bytes:
    return seed[: rng.randrange(len(seed))] if seed else b"\x81"


def wrong_field_type(rng: random.Random, seed: bytes) -> bytes:
    body = _unpack(seed)
    if not body:
        return random_bytes(rng, seed)
    key = rng.choice(sorted(map(str, body)))
    body[key] = rng.choice(_ODD_VALUES)
    return _pack(body)


def missing_field(rng: random.Random, seed: bytes) -> bytes:
    body = _unpack(seed)
    if not body:
        return random_bytes(rng, seed)
    body.pop(rng.choice(sorted(map(str, body))), None)
    return _pack(body)


def unknown_field(rng: random.Random, seed: bytes) -> bytes:
    body = _unpack(seed) or {}
    body[f"extra_{rng.randrange(1000)}"] = rng.choice(_ODD_VALUES)
    return _pack(body)


def other_tag_or_version(rng: random.Random, seed: bytes) -> bytes:
    body = _unpack(seed) or {}
    if rng.random() < 0.5:
        body["t"] = rng.choice(("task", "heartbeat", "node_birth", "nope", "", 7))
    else:
        body["v"] = rng.choice((0, 2, 999, -1, "1", None))
    return _pack(body)


def not_finite(rng: random.Random, seed: bytes) -> bytes:
    """Every number in the message (nested too) set to NaN, +inf or -inf."""
    value = rng.choice((float("nan"), float("inf"), float("-inf")))

    def spoil(item: Any) -> Any:
        if isinstance(item, bool):
            return item
        if isinstance(item, int | float):
            return value
        if isinstance(item, list):
            return [spoil(x) for x in item]
        if isinstance(item, dict):
            return {k: (v if k in ("t", "v") else spoil(v)) for k, v in item.items()}
        return item

    body = _unpack(seed)
    return _pack(spoil(body)) if body else _pack({"t": "heartbeat", "v": 1, "cpu_percent": value})


def oversized(rng: random.Random, seed: bytes) -> bytes:
    """Past every type's size cap but under the broker's packet limit (16 MB): the node must refuse it."""
    body = _unpack(seed) or {"t": "task_result", "v": 1}
    key = rng.choice([k for k in body if k not in ("t", "v")] or ["answer"])
    body[key] = "A" * rng.choice((70_000, 1_100_000, 5_000_000))
    return _pack(body)


def deeply_nested(rng: random.Random, seed: bytes) -> bytes:
    depth = rng.choice((100, 1000, 100_000))
    return b"\x91" * depth + b"\xc0"  # [[[...[nil]...]]]


def another_message(rng: random.Random, seed: bytes, others: list[bytes]) -> bytes:
    """A valid payload captured on another topic (right codec, wrong type for this topic)."""
    return rng.choice(others) if others else random_bytes(rng, seed)


GENERATORS: dict[str, Generator] = {
    "random_bytes": random_bytes,
    "truncated": truncated,
    "wrong_field_type": wrong_field_type,
    "missing_field": missing_field,
    "unknown_field": unknown_field,
    "other_tag_or_version": other_tag_or_version,
    "not_finite": not_finite,
    "oversized": oversized,
    "deeply_nested": deeply_nested,
}


def example_payload(message: Message) -> bytes:
    """A message's wire bytes, for a seed when no traffic was captured on a topic."""
    return message.to_bytes()
