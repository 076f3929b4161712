"""Session contexts on the cloud: uploaded layer-k hidden states and the KV cache of layers [k, L) per session.

States arrive in chunks (any order, duplicates allowed) and are kept as float32 rows by position. The
KV cache is brought up to date lazily: only when a token is asked for does the worker run layers
[k, L) over the positions it has not processed yet. Sessions expire after a TTL and the least
recently used are evicted above a memory cap (decisions in `eviction.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from broker.messages.inference import DraftVerify
from cloud_node.eviction import SessionFigures, expired, lru_victims
from models.decoding import LayerStack, top_token
from models.loaded import LoadedModel
from models.speculative import greedy_accept, nucleus_probabilities, sampled_accept, sparse_distribution

logger = logging.getLogger(__name__)

_FORGOTTEN_KEPT = 4096  # how many forgotten session ids keep their reason (for SessionUnknown replies)


@dataclass(frozen=True, slots=True)
class CloudToken:
    position: int
    token_id: int
    probability: float
    compute_ms: float
    positions_run: int  # positions pushed through layers [k, L) for this token


@dataclass(frozen=True, slots=True)
class CloudVerdict:
    first_position: int
    accepted: int
    token_id: int  # -1: every draft accepted
    compute_ms: float
    positions_run: int  # positions pushed through layers [k, L) for this verdict


def acceptance(logits: torch.Tensor, request: DraftVerify) -> tuple[int, int]:
    """(g, V) full-model logits at the drafting positions -> (accepted, correction or -1) by the request's rule.

    Raises ValueError for a token id outside the vocabulary (a broken edge: refused alone, not a
    failure of the forward the request shared with other sessions)."""
    vocab_size = logits.shape[-1]
    outside = [token for token in (*request.draft_ids, *request.draft_support) if token >= vocab_size]
    if outside:
        raise ValueError(f"token id {outside[0]} outside the vocabulary (0-{vocab_size - 1})")
    if request.temperature == 0.0:
        return greedy_accept(logits, request.draft_ids, request.tie_tolerance)
    target = nucleus_probabilities(logits, request.temperature, request.top_p)  # (g, V)
    draft, offset = [], 0
    for size in request.support_sizes:
        span = slice(offset, offset + size)
        draft.append(sparse_distribution(request.draft_support[span], request.draft_support_probabilities[span],
                                         vocab_size))
        offset += size
    return sampled_accept(target, request.draft_ids, draft, torch.Generator().manual_seed(request.seed))


@dataclass(frozen=True, slots=True)
class Forward:
    """Rows one request pushes through a session's layers [k, L): positions [start, start + n)."""

    start: int
    rows: torch.Tensor  # (1, n, C) uploaded layer-k states, in the model's dtype
    head_from: int  # rows from this index on are the predictions asked for (they need the model's head)


@torch.no_grad()
def forward_together(work: list[tuple[SessionContext, Forward]]) -> list[torch.Tensor]:
    """Requests of sessions over one model and split, in one ragged forward and one head call.

    Every weight of layers [k, L) and of the LM head is read once for all of them, the way a batch of
    cloud-only generations shares its steps (continuous batching); attention reads each session's
    own KV cache. Returns per request the float32 logits (m, V) of its rows from `head_from` on.
    One request per session (the work queue keeps a session's requests in order, one per batch).
    """
    contexts = [context for context, _ in work]
    assert len({id(c) for c in contexts}) == len(contexts), "one request per session in a forward"
    outputs = LayerStack.run_ragged([c.stack for c in contexts], [f.rows for _, f in work], [f.start for _, f in work])
    asked = [hidden[:, forward.head_from :] for (_, forward), hidden in zip(work, outputs, strict=True)]
    logits = contexts[0].stack.logits(torch.cat(asked, dim=1))[0]  # (sum m, V)
    return list(logits.split([rows.shape[1] for rows in asked]))


class SessionContext:
    """One session: states of positions [0, n) (with holes until chunks arrive) and layers [k, L).

    States are kept in float32, so rows sent as fp32 reach the layers exactly as the edge computed them
    (fp16 rows widen exactly; int8 rows arrive dequantized).
    """

    def __init__(self, session_id: str, edge_id: str, model: LoadedModel, split_layer: int, now_s: float) -> None:
        assert 0 < split_layer < model.num_layers, f"split layer {split_layer} outside 1..{model.num_layers - 1}"
        self.session_id = session_id
        self.edge_id = edge_id
        self.model = model
        self.split_layer = split_layer
        self.hidden_size = model.hidden_size
        self.stack = LayerStack(model, split_layer, model.num_layers)  # layers [k, L) and their KV cache
        self.states = torch.zeros(64, self.hidden_size, dtype=torch.float32)  # (capacity, C), grows by doubling
        self.known = torch.zeros(64, dtype=torch.bool)  # (capacity,)
        self.contiguous = 0  # positions [0, contiguous) are all known
        self.last_used_s = now_s
        self.chunks = 0
        self.duplicate_rows = 0
        self.gap_reported_at = -1  # `contiguous` value a resend was last asked for (one ask per gap)

    def add_rows(self, first_position: int, rows: np.ndarray) -> int:
        """Store (n, C) rows for positions [first, first + n); rows already known are kept. Returns new rows."""
        count = rows.shape[0]
        assert rows.shape == (count, self.hidden_size), f"rows {rows.shape} not (n, {self.hidden_size})"
        self._reserve(first_position + count)
        span = slice(first_position, first_position + count)
        fresh = ~self.known[span]  # (n,) duplicates never overwrite: the first copy is already cached below
        new_rows = int(fresh.sum())
        self.duplicate_rows += count - new_rows
        if new_rows:
            values = torch.from_numpy(rows.astype(np.float32))  # a copy: the chunk buffer is read-only
            self.states[span][fresh] = values[fresh]
            self.known[span] |= fresh
        while self.contiguous < self.known.shape[0] and self.known[self.contiguous]:
            self.contiguous += 1
        self.chunks += 1
        return new_rows

    def first_missing(self, position: int) -> int | None:
        """First position in [0, position] not yet uploaded, or None if all are here."""
        return None if self.contiguous > position else self.contiguous

    def token_forward(self, position: int) -> Forward:
        """What asking for the token after [0, position] runs. Asserts the states are all here."""
        assert self.contiguous > position, f"{self.session_id}: positions from {self.contiguous} missing"
        start = min(self.stack.length, position)  # asked again (a retry): recompute the last position only
        return Forward(start, self.states[start : position + 1].to(self.model.dtype).unsqueeze(0), position - start)

    def token_from(self, position: int, forward: Forward, logits: torch.Tensor, compute_ms: float) -> CloudToken:
        """The full model's greedy token from the (1, V) logits of `forward`'s last row."""
        token, probability = top_token(logits[-1])
        return CloudToken(position, int(token), float(probability), compute_ms, forward.rows.shape[1])

    def verify_forward(self, request: DraftVerify) -> Forward:
        """What verifying drafts for positions first + 1 ... first + g runs: rows [first, first + g) and any
        the stack has not seen yet (a repeated request recomputes from its first row). Asserts they are here."""
        first, end = request.first_position, request.first_position + len(request.draft_ids)
        assert self.contiguous >= end, f"{self.session_id}: positions from {self.contiguous} missing"
        start = min(self.stack.length, first)
        return Forward(start, self.states[start:end].to(self.model.dtype).unsqueeze(0), first - start)

    def verdict_from(self, request: DraftVerify, forward: Forward, logits: torch.Tensor,
                     compute_ms: float) -> CloudVerdict:
        """The acceptance rule's verdict (greedy, or speculative sampling with the request's temperature and
        top-p) from the (g, V) logits at the drafting positions. Afterwards the KV cache and the stored rows
        forget every position past the last one fed with an accepted token, so the edge's next rows for
        them are taken. Raises ValueError for a draft its own distribution gives probability 0."""
        accepted, token = acceptance(logits, request)
        first = request.first_position
        self.rollback(first + accepted + 1)
        return CloudVerdict(first, accepted, token, compute_ms, forward.rows.shape[1])

    def token_for(self, position: int) -> CloudToken:
        """The full model's greedy token after positions [0, position], alone (see `forward_together`)."""
        started = time.perf_counter()
        forward = self.token_forward(position)
        (logits,) = forward_together([(self, forward)])
        return self.token_from(position, forward, logits, (time.perf_counter() - started) * 1e3)

    def verify(self, request: DraftVerify) -> CloudVerdict:
        """Verify one request's drafts alone, in one forward (see `verify_forward`, `verdict_from`)."""
        started = time.perf_counter()
        forward = self.verify_forward(request)
        (logits,) = forward_together([(self, forward)])
        return self.verdict_from(request, forward, logits, (time.perf_counter() - started) * 1e3)

    def rollback(self, length: int) -> None:
        """Forget positions >= length: KV cache and uploaded rows (rejected drafts are uploaded anew)."""
        if self.stack.length > length:
            self.stack.rollback(length)
        if self.contiguous > length or bool(self.known[length:].any()):
            self.known[length:] = False
            self.contiguous = min(self.contiguous, length)
            self.gap_reported_at = -1

    def nbytes(self) -> int:
        return self.states.numel() * self.states.element_size() + self.stack.cache_bytes()

    def figures(self) -> SessionFigures:
        return SessionFigures(self.session_id, self.last_used_s, self.nbytes())

    def _reserve(self, length: int) -> None:
        capacity = self.states.shape[0]
        if length <= capacity:
            return
        while capacity < length:
            capacity *= 2
        states = torch.zeros(capacity, self.hidden_size, dtype=torch.float32)
        known = torch.zeros(capacity, dtype=torch.bool)
        states[: self.states.shape[0]] = self.states
        known[: self.known.shape[0]] = self.known
        self.states, self.known = states, known


class SessionContexts:
    """All sessions of one worker, with TTL expiry and an LRU memory cap. Thread-safe (one lock)."""

    def __init__(self, ttl_s: float, memory_cap_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.memory_cap_bytes = memory_cap_bytes
        self.clock = clock
        self.lock = threading.RLock()  # held by callers around token computation too
        self._sessions: dict[str, SessionContext] = {}
        self._forgotten: dict[str, str] = {}  # session id -> why it is gone
        self.evictions = 0
        self.expirations = 0

    def open(self, session_id: str, edge_id: str, model: LoadedModel, split_layer: int) -> SessionContext:
        """A fresh context for the session (a re-open starts over: the edge re-uploads everything)."""
        with self.lock:
            context = SessionContext(session_id, edge_id, model, split_layer, self.clock())
            self._sessions[session_id] = context
            self._forgotten.pop(session_id, None)
            logger.info("session %s of %s opened at split %d", session_id, edge_id, split_layer)
            return context

    def owner(self, session_id: str) -> str | None:
        """The edge that opened the live session, or None (does not count as a use)."""
        with self.lock:
            context = self._sessions.get(session_id)
            return context.edge_id if context is not None else None

    def get(self, session_id: str) -> SessionContext | None:
        """The live context (and marks it used), or None. Expired sessions are dropped here too."""
        with self.lock:
            context = self._sessions.get(session_id)
            if context is None:
                return None
            now = self.clock()
            if now - context.last_used_s >= self.ttl_s:
                self._forget(session_id, "expired")
                self.expirations += 1
                return None
            context.last_used_s = now
            return context

    def why_unknown(self, session_id: str) -> str:
        with self.lock:
            return self._forgotten.get(session_id, "never opened on this worker (or it restarted)")

    def close(self, session_id: str) -> bool:
        with self.lock:
            return self._forget(session_id, "closed")

    def sweep(self) -> list[str]:
        """Drop sessions idle past the TTL; returns their ids."""
        with self.lock:
            gone = expired((c.figures() for c in self._sessions.values()), self.clock(), self.ttl_s)
            for session_id in gone:
                self._forget(session_id, "expired")
            self.expirations += len(gone)
            return gone

    def enforce_cap(self, protect: str | None = None) -> list[str]:
        """Evict least recently used sessions until the rest fit under the memory cap."""
        with self.lock:
            victims = lru_victims((c.figures() for c in self._sessions.values()), self.memory_cap_bytes, protect)
            for session_id in victims:
                self._forget(session_id, "evicted (memory cap)")
            self.evictions += len(victims)
            return victims

    def bytes_held(self) -> int:
        with self.lock:
            return sum(context.nbytes() for context in self._sessions.values())

    def figures(self) -> dict[str, float]:
        """Counters for the heartbeat."""
        with self.lock:
            return {
                "sessions": float(len(self._sessions)),
                "session_bytes": float(self.bytes_held()),
                "session_evictions": float(self.evictions),
                "session_expirations": float(self.expirations),
            }

    def _forget(self, session_id: str, reason: str) -> bool:
        context = self._sessions.pop(session_id, None)
        if context is None:
            return False
        self._forgotten[session_id] = reason
        while len(self._forgotten) > _FORGOTTEN_KEPT:
            self._forgotten.pop(next(iter(self._forgotten)))
        logger.info("session %s of %s %s", session_id, context.edge_id, reason)
        return True
