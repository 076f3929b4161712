"""The edge's MQTT side of collaborative generation: session open, batched asynchronous upload, token requests.

`CollabClient` is one per edge (it owns the subscription to the edge's `down` topics); it opens a
`CloudSession` per answer. A session keeps every layer-k row it was given (fp16, 1,152 B a position
at hidden size 576; fp32 when rows travel as fp32) so it can re-send after a gap or re-upload after the
worker lost the session.
One uploader thread publishes everything on the session's `up` topic in order: chunks, then the
token request that needs them, so MQTT's per-topic ordering delivers the request after its context
(a token request or a greedy verification rides in the last of those chunks when there are any).
"""

from __future__ import annotations

import functools
import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from broker import topics
from broker.client import BusClient, Envelope
from broker.errors import BusError
from broker.messages.codec import Message
from broker.messages.hidden_rows import encode_rows
from broker.messages.inference import (
    ChunkRejected,
    ContextChunk,
    DraftVerdict,
    DraftVerify,
    GenerateReply,
    GenerateRequest,
    HiddenDtype,
    NaiveStep,
    RequestRefused,
    ResendRequest,
    SessionClose,
    SessionOpen,
    SessionOpened,
    SessionUnknown,
    TokenReply,
    TokenRequest,
    riding_fields,
)

logger = logging.getLogger(__name__)

_UPLOADER_WAIT_S = 0.5  # uploader wakes this often to notice close()
RETRY_INTERVAL_S = 1.0  # an unanswered open or token request is sent again after this (lost, or a worker
# that subscribed a moment too late); answering twice is harmless


class CloudUnavailableError(BusError):
    """No cloud worker answered in time, or it refused; the caller finishes locally."""


@dataclass
class LinkFaults:
    """Fault injection for tests and benchmarks: which chunk sequence numbers to lose or send twice."""

    drop: Callable[[int], bool] = lambda seq: False
    duplicate: Callable[[int], bool] = lambda seq: False


@dataclass
class LinkCounters:
    bytes_up: int = 0  # payload bytes published towards the cloud (opens, chunks, requests, close)
    bytes_down: int = 0  # payload bytes received from the cloud
    chunks: int = 0
    resends: int = 0  # resend requests honoured
    reopens: int = 0  # sessions opened again after the worker lost them
    rejected: list[str] = field(default_factory=list)  # reasons of chunks the cloud refused


@dataclass(frozen=True, slots=True)
class DraftSampling:
    """How the cloud verifies drafts: greedily (temperature 0), or by the speculative-sampling rule."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    draft_probabilities: tuple[float, ...] = ()  # the edge's probability of each draft token
    support_sizes: tuple[int, ...] = ()  # entries of each draft position's distribution below
    draft_support: tuple[int, ...] = ()
    draft_support_probabilities: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class CloudAnswer:
    token_id: int
    probability: float
    compute_ms: float  # cloud-side


class CollabClient:
    """Per-edge entry point: opens sessions, and runs the cloud-only and naive-split baselines."""

    def __init__(self, bus: BusClient, edge_id: str) -> None:
        self.bus = bus
        self.edge_id = edge_id
        self._sessions: dict[str, CloudSession] = {}
        self._lock = threading.Lock()
        self.bus.subscribe(topics.INFER_DOWN, self._on_down, edge=edge_id)

    def open_session(self, model_id: str, split_layer: int, hidden_size: int, *, timeout_s: float,
                     chunk_positions: int = 512, faults: LinkFaults | None = None,
                     state_dtype: HiddenDtype = "fp16", min_positions: int = 1) -> CloudSession:
        """Open a session on any cloud worker. Raises CloudUnavailableError."""
        session = CloudSession(self, uuid.uuid4().hex[:16], model_id, split_layer, hidden_size,
                               chunk_positions, faults or LinkFaults(), state_dtype, min_positions)
        with self._lock:
            self._sessions[session.session_id] = session
        try:
            session.open(timeout_s)
        except CloudUnavailableError:
            self._forget(session.session_id)
            raise
        return session

    def generate_cloud_only(self, model_id: str, prompt_ids: list[int], max_new_tokens: int, *,
                            timeout_s: float, counters: LinkCounters, stop_at_eos: bool = True) -> GenerateReply:
        """The whole answer from one cloud worker. Raises CloudUnavailableError."""
        request = GenerateRequest(uuid.uuid4().hex[:16], model_id, tuple(prompt_ids), max_new_tokens, stop_at_eos)
        reply = self.request(request, timeout_s, counters)
        if not isinstance(reply, GenerateReply):
            raise CloudUnavailableError(f"cloud-only generation refused: {getattr(reply, 'reason', reply)}")
        return reply

    def naive_step(self, model_id: str, split_layer: int, rows: np.ndarray, *, timeout_s: float,
                   counters: LinkCounters) -> CloudAnswer:
        """Naive split: the whole context's fp32 layer-k states to a stateless worker. Raises CloudUnavailableError."""
        count, hidden_size = rows.shape
        data = np.ascontiguousarray(rows, dtype="<f4").tobytes()
        step = NaiveStep(uuid.uuid4().hex[:16], model_id, split_layer, count, hidden_size, data)
        reply = self.request(step, timeout_s, counters)
        if not isinstance(reply, TokenReply):
            raise CloudUnavailableError(f"naive step refused: {getattr(reply, 'reason', reply)}")
        return CloudAnswer(reply.token_id, reply.probability, reply.compute_ms)

    def request(self, message: Message, timeout_s: float, counters: LinkCounters) -> Message:
        """MQTT 5 request on `infer/open`. Raises CloudUnavailableError on timeout or bus failure."""
        payload_bytes = len(message.to_bytes())
        counters.bytes_up += payload_bytes
        try:
            envelope = self.bus.request(topics.INFER_OPEN, message, timeout_s=timeout_s)
        except BusError as error:
            raise CloudUnavailableError(str(error)) from error
        counters.bytes_down += len(envelope.message.to_bytes())
        return envelope.message

    def publish_up(self, session_id: str, message: Message) -> int:
        """Publish on the session's up topic; returns payload bytes."""
        payload = message.to_bytes()
        self.bus.publish_bytes(topics.INFER_UP.topic(edge=self.edge_id, session=session_id), payload, qos=topics.INFER_UP.qos)
        return len(payload)

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _on_down(self, envelope: Envelope) -> None:
        session_id = envelope.params["session"]
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            return  # a late reply for an answer already finished
        session.on_down(envelope.message)


class CloudSession:
    """One answer's session with a cloud worker. Rows are added in position order as the edge computes them."""

    def __init__(self, client: CollabClient, session_id: str, model_id: str, split_layer: int, hidden_size: int,
                 chunk_positions: int, faults: LinkFaults, state_dtype: HiddenDtype = "fp16",
                 min_positions: int = 1) -> None:
        self.client = client
        self.session_id = session_id
        self.model_id = model_id
        self.split_layer = split_layer
        self.hidden_size = hidden_size
        self.chunk_positions = chunk_positions
        # Rows wait until this many are pending or a request needs them: fewer, larger chunks (each
        # chunk's header is ~130 B, a tenth of an fp16 row), and the worker only needs rows at a request.
        self.min_positions = min_positions
        self.faults = faults
        self.worker_id = ""
        self.counters = LinkCounters()
        # (capacity, C) every layer-k row so far: fp32 rows as computed, else fp16 (int8 is encoded from these)
        self._row_dtype = np.dtype("<f4" if state_dtype == "fp32" else "<f2")
        self._rows = np.zeros((256, hidden_size), dtype=self._row_dtype)
        self._known = 0  # rows [0, _known) are here
        self._held_from: int | None = None  # rows from here on wait for release() (drafted past a verification)
        self._sent = 0  # rows [0, _sent) handed to the uploader
        self._seq = itertools.count()
        self._request_ids = itertools.count()
        self._lock = threading.Lock()
        self._pending: dict[int, Future[Message]] = {}
        self.state_dtype: HiddenDtype = state_dtype  # how rows travel: fp16, fp32, or int8 with a scale per position
        self._outbox: queue.Queue[tuple[str, int, Callable[[int], Message] | None] | None] = queue.Queue()
        self._closed = False
        self._uploader = threading.Thread(target=self._upload_loop, name=f"collab-upload-{session_id}", daemon=True)
        self._uploader.start()

    # ---- caller side -----------------------------------------------------------------------------

    def open(self, timeout_s: float) -> None:
        """(Re)open the session on whichever worker the shared subscription picks. Raises CloudUnavailableError."""
        request = SessionOpen(self.session_id, self.client.edge_id, self.model_id, self.split_layer, self.hidden_size)
        deadline = time.monotonic() + timeout_s
        while True:
            attempt_s = min(RETRY_INTERVAL_S, deadline - time.monotonic())
            try:
                reply = self.client.request(request, max(0.01, attempt_s), self.counters)
                break
            except CloudUnavailableError:
                if time.monotonic() >= deadline - 0.01:
                    raise
        if isinstance(reply, RequestRefused):
            raise CloudUnavailableError(f"session {self.session_id} refused: {reply.reason}")
        if not isinstance(reply, SessionOpened):
            raise CloudUnavailableError(f"session {self.session_id}: unexpected reply {type(reply).__name__}")
        self.worker_id = reply.worker_id
        logger.info("%s: session %s opened on %s", self.client.edge_id, self.session_id, self.worker_id)

    def add_rows(self, first_position: int, rows: np.ndarray) -> None:
        """Layer-k states (n, C) for positions [first, first + n), in order; uploaded in the background."""
        count = rows.shape[0]
        assert first_position == self._known, f"rows must arrive in order: got {first_position}, expected {self._known}"
        assert rows.shape[1] == self.hidden_size, f"rows {rows.shape} not (n, {self.hidden_size})"
        with self._lock:
            if self._known + count > self._rows.shape[0]:
                grown = np.zeros((max(2 * self._rows.shape[0], self._known + count), self.hidden_size),
                                 dtype=self._row_dtype)
                grown[: self._known] = self._rows[: self._known]
                self._rows = grown
            self._rows[first_position : first_position + count] = rows
            self._known += count
        self._outbox.put(("rows", first_position + count, None))

    def ask(self, position: int, deadline_s: float, max_reopens: int) -> CloudAnswer | None:
        """The cloud's token for `position`, or None if it did not come before the deadline.

        Resend requests and unknown-session replies are handled here: missing rows go again, a lost
        session is opened again (possibly on another worker) and everything is re-uploaded.
        """
        assert position < self._known, f"position {position} not computed yet ({self._known} rows)"

        def request(request_id: int) -> Message:
            return TokenRequest(self.session_id, self.worker_id, request_id, position, self.counters.chunks)

        reply = self._exchange(request, f"token for position {position}", deadline_s, max_reopens)
        return CloudAnswer(reply.token_id, reply.probability, reply.compute_ms) if isinstance(reply, TokenReply) else None

    def verify(self, first_position: int, draft_ids: tuple[int, ...], deadline_s: float, max_reopens: int,
               sampling: DraftSampling | None = None, tie_tolerance: float = 0.0) -> DraftVerdict | None:
        """The cloud's verdict on drafts for positions first + 1 ...; rows [first, first + g) must be added.

        None if no verdict came before the deadline (handled as in `ask`). `tie_tolerance`: see `DraftVerify`.
        """
        assert first_position + len(draft_ids) <= self._known, \
            f"rows up to {first_position + len(draft_ids)} not computed yet ({self._known} rows)"
        sampling = sampling or DraftSampling()

        def request(request_id: int) -> Message:
            return DraftVerify(self.session_id, self.worker_id, request_id, first_position, draft_ids,
                               self.counters.chunks, sampling.temperature, sampling.top_p, sampling.seed,
                               sampling.draft_probabilities, sampling.support_sizes, sampling.draft_support,
                               sampling.draft_support_probabilities, tie_tolerance)

        reply = self._exchange(request, f"verdict on {len(draft_ids)} drafts after {first_position}", deadline_s,
                               max_reopens)
        return reply if isinstance(reply, DraftVerdict) else None

    def rollback(self, length: int) -> None:
        """Forget rows >= length (rejected drafts): the edge adds new rows for those positions."""
        with self._lock:
            assert length <= self._known, f"cannot roll back {self._known} rows to {length}"
            self._known = length
            self._sent = min(self._sent, length)

    @property
    def known(self) -> int:
        """Rows [0, known) have been added."""
        return self._known

    def hold(self, position: int) -> None:
        """Keep rows from `position` on here until `release()`: they were drafted past a verification in
        flight, and a rejection would make them wrong (the worker keeps the first copy of a row)."""
        with self._lock:
            self._held_from = position

    def release(self) -> None:
        """The held rows may go up (their verification accepted everything before them, or they were rolled
        back). Like any rows they wait for `min_positions` or the next request, which then rides with them."""
        with self._lock:
            self._held_from = None
        self._outbox.put(("rows", self._known, None))

    def _exchange(self, build: Callable[[int], Message], what: str, deadline_s: float, max_reopens: int) -> Message | None:
        """Send `build(request_id)` after the rows it needs; the answer, or None past the deadline."""
        deadline = time.monotonic() + deadline_s
        reopens = 0
        while True:
            request_id = next(self._request_ids)
            future: Future[Message] = Future()
            self._pending[request_id] = future
            self._outbox.put(("request", request_id, build))
            remaining_s = deadline - time.monotonic()
            try:
                reply = future.result(max(0.0, min(RETRY_INTERVAL_S, remaining_s)))
            except FutureTimeout:
                if remaining_s > RETRY_INTERVAL_S:
                    continue  # ask again: the request or its answer may have been lost
                logger.warning("%s: session %s: no %s within %.2f s", self.client.edge_id, self.session_id, what,
                               deadline_s)
                return None
            finally:
                self._pending.pop(request_id, None)
            match reply:
                case TokenReply() | DraftVerdict():
                    return reply
                case ResendRequest():
                    self.counters.resends += 1
                    self._outbox.put(("resend", reply.from_position, None))
                case SessionUnknown():
                    if reopens >= max_reopens:
                        return None
                    reopens += 1
                    self.counters.reopens += 1
                    logger.info("%s: session %s unknown at %s (%s): re-opening", self.client.edge_id,
                                self.session_id, self.worker_id, reply.reason)
                    try:
                        self.open(max(0.01, deadline - time.monotonic()))
                    except CloudUnavailableError:
                        return None
                    self._outbox.put(("resend", 0, None))

    def close(self, notify: bool = True) -> None:
        """Stop uploading; with `notify`, tell the worker to drop the context."""
        if self._closed:
            return
        self._closed = True
        if notify and self.worker_id:
            self._outbox.put(("close", 0, None))
        self._outbox.put(None)
        self._uploader.join(5.0)
        self.client._forget(self.session_id)

    def on_down(self, message: Message) -> None:
        """Dispatcher thread: a message from the worker for this session."""
        self.counters.bytes_down += len(message.to_bytes())
        request_id = getattr(message, "request_id", -1)
        if request_id >= 0:
            future = self._pending.get(request_id)
            if future is not None and not future.done():
                future.set_result(message)
            return
        match message:
            case ResendRequest():  # a gap the worker saw in the chunk stream
                self.counters.resends += 1
                self._outbox.put(("resend", message.from_position, None))
            case ChunkRejected():
                self.counters.rejected.append(message.reason)
                logger.warning("%s: session %s chunk %d rejected: %s", self.client.edge_id, self.session_id,
                               message.seq, message.reason)
            case SessionUnknown():
                logger.debug("session %s unknown at %s: %s", self.session_id, self.worker_id, message.reason)

    # ---- uploader thread -------------------------------------------------------------------------

    def _upload_loop(self) -> None:
        while True:
            try:
                item = self._outbox.get(timeout=_UPLOADER_WAIT_S)
            except queue.Empty:
                continue
            if item is None:
                return
            kind, value, build = item
            try:
                if kind == "rows":
                    if value - self._sent >= self.min_positions:
                        self._upload_until(value)
                elif kind == "resend":
                    with self._lock:
                        self._sent = min(self._sent, value)
                    self._upload_until(self._known)
                elif kind == "request":
                    # whatever the request needs goes first; the request rides in the last chunk if it can
                    if not self._upload_until(self._known, ask=functools.partial(build, value)):
                        self.counters.bytes_up += self.client.publish_up(self.session_id, build(value))
                elif kind == "close":
                    close = SessionClose(self.session_id, self.worker_id)
                    self.counters.bytes_up += self.client.publish_up(self.session_id, close)
            except BusError as error:
                logger.warning("%s: session %s upload failed: %s", self.client.edge_id, self.session_id, error)

    def _upload_until(self, end: int, ask: Callable[[], Message] | None = None) -> bool:
        """Publish rows [_sent, end) as chunks of at most `chunk_positions`.

        `ask` builds the request those rows are for: it goes in the last chunk if it can
        (`riding_fields`). Returns True if it did (the caller sends it alone otherwise).
        """
        if not self.worker_id:
            return False
        while True:
            with self._lock:  # rollback() may move _known / _sent back between chunks
                first = self._sent
                limit = min(end, self._known, self._held_from if self._held_from is not None else self._known)
                count = min(self.chunk_positions, limit - first)
                if count <= 0:
                    return False
                data = encode_rows(self._rows[first : first + count], self.state_dtype)
                self._sent = first + count
            seq = next(self._seq)
            request = ask() if ask is not None and first + count == limit else None
            riding = None if request is None else riding_fields(request, first + count)
            chunk = ContextChunk(self.session_id, seq, first, count, self.hidden_size, data, self.state_dtype,
                                 time.time_ns(), self.worker_id, **(riding or {}))
            self.counters.chunks += 1
            if not self.faults.drop(seq):  # else lost on the way (tests): the worker will ask for it again
                self.counters.bytes_up += self.client.publish_up(self.session_id, chunk)
                if self.faults.duplicate(seq):
                    self.counters.bytes_up += self.client.publish_up(self.session_id, chunk)
            if riding is not None:
                return True


def session_traffic(session: CloudSession | None) -> tuple[int, int]:
    """(bytes up, bytes down) of a session so far; (0, 0) without one (the steppers diff these per token)."""
    return (session.counters.bytes_up, session.counters.bytes_down) if session else (0, 0)


def upload_rows(session: CloudSession | None, first_position: int, hidden_states: torch.Tensor) -> None:
    """A layer-k sink's (1, n, C) rows into the session, kept in the wire's dtype; nothing once it is gone."""
    if session is not None:
        session.add_rows(first_position, hidden_states[0].float().numpy())


__all__ = ["CloudAnswer", "CloudSession", "CloudUnavailableError", "CollabClient", "DraftSampling", "LinkCounters",
           "LinkFaults", "session_traffic", "upload_rows"]
