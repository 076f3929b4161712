"""The cloud worker's inference endpoint: sessions over MQTT, token requests, verifications, cloud-only and naive-split steps.

Message handlers run on the bus client's dispatcher thread and only do cheap work there (storing
uploaded rows, answering close); anything that runs the model goes to one compute thread, in the
order messages arrived, except that cloud-only generations of one model run as one continuous
batch (`generations.py`: requests join between steps and leave when done), serving the session
requests queued meanwhile between its steps, and session
requests (token requests, verifications) of many sessions ready together run as one ragged forward
(`contexts.forward_together`). Every job's
CPU time, layer passes and tokens are counted per mode (`cost.py`) for the heartbeat. Because chunks and token requests of a session share one topic, MQTT's
per-topic ordering means the chunks sent before a request have been stored when it is served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import torch

from broker import topics
from broker.client import BusClient, Envelope
from broker.errors import BusError
from broker.messages.inference import (
    ChunkRejected,
    CloudDownMessage,
    CloudReply,
    ContextChunk,
    DraftVerdict,
    DraftVerify,
    GenerateReply,
    GenerateRequest,
    NaiveStep,
    RequestRefused,
    ResendRequest,
    SessionClose,
    SessionOpen,
    SessionOpened,
    SessionUnknown,
    TokenReply,
    TokenRequest,
    riding_request,
)
from cloud_node.chunk_check import ChunkError, chunk_rows
from cloud_node.config import CloudConfig
from cloud_node.contexts import Forward, SessionContext, SessionContexts, forward_together
from cloud_node.cost import CostAccount
from cloud_node.generations import GenerationBatch, refusal
from cloud_node.model_pool import ModelPool, ModelStoreError
from cloud_node.work_queue import Job, WorkQueue
from models.decoding import LayerStack, top_token
from models.loaded import LoadedModel

logger = logging.getLogger(__name__)

_QUEUE_WAIT_S = 0.5  # compute thread wakes this often to notice stop()
_SESSION_REQUESTS = "session-requests"  # batch key of token requests and verifications (any session)
_Ready = tuple[str, "TokenRequest | DraftVerify", SessionContext]  # (edge, request, its context with every row)


def _mode_of(request: TokenRequest | DraftVerify) -> str:
    return "collaborative" if isinstance(request, TokenRequest) else "speculative"


class CloudInference:
    """Serves `infer/open` (shared subscription) and the `up` topics of the sessions it holds."""

    def __init__(self, config: CloudConfig, bus: BusClient, models: ModelPool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.worker_id = config.node_id
        self.bus = bus
        self.models = models
        self.contexts = SessionContexts(config.session_ttl_s, config.memory_cap_bytes, clock)
        self._work = WorkQueue(config.max_batch, config.batch_window_s)
        self.cost = CostAccount()
        self._stop = threading.Event()
        self._compute = threading.Thread(target=self._compute_loop, name=f"cloud-compute-{self.worker_id}", daemon=True)
        self._janitor = threading.Thread(target=self._janitor_loop, name=f"cloud-janitor-{self.worker_id}", daemon=True)
        self.counts: dict[str, int] = {"tokens_served": 0, "chunks_rejected": 0, "generate_requests": 0,
                                       "naive_steps": 0, "resend_requests": 0, "unknown_session_replies": 0,
                                       "drafts_verified": 0, "drafts_accepted": 0, "generate_batches": 0,
                                       "generations_joined_running": 0,
                                       "impersonations_refused": 0, "session_forwards": 0,
                                       "session_requests_batched": 0}

    def start(self) -> CloudInference:
        self._compute.start()
        self._janitor.start()
        self.bus.subscribe(topics.INFER_OPEN, self._on_open, shared_group=topics.SHARED_GROUP)
        self.bus.subscribe(topics.INFER_UP, self._on_up)
        logger.info("%s: serving collaborative inference", self.worker_id)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._work.put(None)
        for thread in (self._compute, self._janitor):
            if thread.is_alive():
                thread.join(timeout_s)

    def figures(self) -> dict[str, float]:
        """Heartbeat counters: sessions, bytes held, evictions, expirations, requests served."""
        return {**self.contexts.figures(), **{name: float(value) for name, value in self.counts.items()},
                **self.cost.figures()}

    def queue_depth(self) -> int:
        return self._work.qsize()

    # ---- dispatcher thread -----------------------------------------------------------------------

    def _on_open(self, envelope: Envelope) -> None:
        message = envelope.message
        match message:
            case GenerateRequest():
                self._work.put(Job(batch_key=message.model_id, payload=envelope))
            case SessionOpen() | NaiveStep():
                self._work.put(Job(lambda: self._serve_request(envelope), between_steps=True))
            case _:
                logger.warning("%s: unexpected %s on infer/open", self.worker_id, type(message).__name__)

    def _on_up(self, envelope: Envelope) -> None:
        edge, session_id = envelope.params["edge"], envelope.params["session"]
        message = envelope.message
        if getattr(message, "worker_id", self.worker_id) != self.worker_id:
            return  # another worker's session: sessions stick to the worker that opened them
        if getattr(message, "session_id", session_id) != session_id:
            logger.warning("%s: session id in %s differs from topic %s", self.worker_id, type(message).__name__, session_id)
            return
        owner = self.contexts.owner(session_id)
        if owner is not None and owner != edge:  # an edge writing into another edge's session
            self.counts["impersonations_refused"] += 1
            logger.warning("%s: %s wrote into session %s of %s; dropped", self.worker_id, edge, session_id, owner)
            return
        match message:
            case ContextChunk():
                self._ingest(edge, message)
                riding = riding_request(message)
                if riding is not None:  # asked after the rows were added: served like one sent alone
                    self._queue_session_request(edge, riding)
            case TokenRequest() | DraftVerify():
                self._queue_session_request(edge, message)
            case SessionClose():
                self.contexts.close(session_id)

    def _queue_session_request(self, edge: str, request: TokenRequest | DraftVerify) -> None:
        self._work.put(Job(batch_key=_SESSION_REQUESTS, payload=(edge, request), sequence=request.session_id,
                           between_steps=True, waits_to_fill=False))

    def _ingest(self, edge: str, chunk: ContextChunk) -> None:
        context = self.contexts.get(chunk.session_id)
        if context is None:
            self._send_down(edge, SessionUnknown(chunk.session_id, -1, self.contexts.why_unknown(chunk.session_id)))
            return
        try:
            rows = chunk_rows(chunk, context.hidden_size, self.config.max_positions)
        except ChunkError as error:
            self.counts["chunks_rejected"] += 1
            logger.warning("%s: session %s chunk %d rejected: %s", self.worker_id, chunk.session_id, chunk.seq, error)
            self._send_down(edge, ChunkRejected(chunk.session_id, chunk.seq, str(error)))
            return
        with self.contexts.lock:
            context.add_rows(chunk.first_position, rows)
            gap_at = context.contiguous
            if chunk.first_position > gap_at and context.gap_reported_at != gap_at:
                # A later chunk arrived while earlier positions are missing: ask once per gap.
                context.gap_reported_at = gap_at
                self.counts["resend_requests"] += 1
                self._send_down(edge, ResendRequest(chunk.session_id, -1, gap_at))
        self.contexts.enforce_cap(protect=chunk.session_id)

    # ---- compute thread --------------------------------------------------------------------------

    def _compute_loop(self) -> None:
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        while not self._stop.is_set():
            jobs = self._work.take(_QUEUE_WAIT_S)
            if jobs is None:
                return
            if jobs:
                self._run(jobs)

    def _run(self, jobs: list[Job]) -> None:
        """One batch from the queue: session requests, cloud-only generations, or a single job."""
        if jobs[0].batch_key == _SESSION_REQUESTS:
            self._guarded(lambda: self._serve_session_requests([job.payload for job in jobs]))
        elif jobs[0].batch_key is not None:
            self._guarded(lambda: self._generate_batch([job.payload for job in jobs]))
        else:
            self._guarded(jobs[0].run)

    def _guarded(self, work: Callable[[], None] | None) -> None:
        """Run one job; a failure is logged and the worker goes on."""
        assert work is not None
        try:
            work()
        except BusError as error:
            logger.warning("%s: could not answer: %s", self.worker_id, error)
        except Exception:
            logger.exception("%s: request failed", self.worker_id)

    def _serve_waiting(self) -> None:
        """Between the steps of a batched generation: the session requests queued meanwhile."""
        for jobs in self._work.take_between_steps():
            self._run(jobs)

    def _janitor_loop(self) -> None:
        while not self._stop.wait(self.config.janitor_interval_s):
            self.contexts.sweep()

    def _serve_request(self, envelope: Envelope) -> None:
        message = envelope.message
        try:
            match message:
                case SessionOpen():
                    reply = self._open(message, envelope.response_topic)
                case NaiveStep():
                    reply = self._naive_step(message)
                case _:
                    return
        except (ModelStoreError, ChunkError, ValueError) as error:
            request_id = getattr(message, "session_id", None) or getattr(message, "request_id", "")
            logger.warning("%s: refused %s %s: %s", self.worker_id, type(message).__name__, request_id, error)
            reply = RequestRefused(str(request_id), str(error)[:1000])
        self._reply(envelope, reply)

    def _open(self, message: SessionOpen, response_topic: str | None) -> SessionOpened:
        """Raises ValueError for a session opened in another edge's name (refused, counted)."""
        # The broker lets only edge X read reply/X and write infer/X/...: an open whose reply would go to
        # someone else than the edge it names is an edge speaking for another one (docs/security.md).
        if response_topic != topics.REPLY.topic(client=message.edge_id):
            self.counts["impersonations_refused"] += 1
            raise ValueError(f"session {message.session_id} names edge {message.edge_id!r} but asks for replies on "
                             f"{response_topic!r}")
        model = self._model(message.model_id, message.split_layer, message.hidden_size)
        self.contexts.open(message.session_id, message.edge_id, model, message.split_layer)
        return SessionOpened(message.session_id, self.worker_id, self.config.session_ttl_s, self.config.max_positions)

    def _ready_context(self, edge: str, request: TokenRequest | DraftVerify, last_position: int) -> SessionContext | None:
        """The session's context if rows [0, last_position] are all here; else tells the edge why not. Lock held."""
        context = self.contexts.get(request.session_id)
        if context is None:
            self.counts["unknown_session_replies"] += 1
            reason = self.contexts.why_unknown(request.session_id)
            self._send_down(edge, SessionUnknown(request.session_id, request.request_id, reason))
            return None
        missing = context.first_missing(last_position)
        if missing is not None:
            self.counts["resend_requests"] += 1
            self._send_down(edge, ResendRequest(request.session_id, request.request_id, missing))
            return None
        return context

    def _serve_session_requests(self, requests: list[tuple[str, TokenRequest | DraftVerify]]) -> None:
        """Token requests and verifications of different sessions: those whose rows are all here run
        together, one ragged forward per (model, split layer); the others are told what is missing."""
        replies: list[tuple[str, CloudDownMessage]] = []
        with self.contexts.lock:
            groups: dict[tuple[int, int], list[_Ready]] = {}
            for edge, request in requests:
                last = request.position if isinstance(request, TokenRequest) else \
                    request.first_position + len(request.draft_ids) - 1
                context = self._ready_context(edge, request, last)
                if context is not None:
                    groups.setdefault((id(context.model), context.split_layer), []).append((edge, request, context))
            for group in groups.values():
                try:
                    replies += self._serve_group(group)
                except Exception:  # this group's edges retry; the other groups' replies still go
                    logger.exception("%s: a forward of %d session requests failed", self.worker_id, len(group))
        for edge, reply in replies:
            self._send_down(edge, reply)
        for _, request in requests:
            self.contexts.enforce_cap(protect=request.session_id)

    def _serve_group(self, group: list[_Ready]) -> list[tuple[str, CloudDownMessage]]:
        """One ragged forward for requests of sessions over one model and split. Contexts lock held."""
        forwards = [context.token_forward(request.position) if isinstance(request, TokenRequest)
                    else context.verify_forward(request) for _, request, context in group]
        shares: dict[str, float] = {}
        for (_, request, _), forward in zip(group, forwards, strict=True):
            shares[_mode_of(request)] = shares.get(_mode_of(request), 0.0) + forward.rows.shape[1]
        started = time.perf_counter()
        with self.cost.measure(shares):
            logits = forward_together([(context, forward) for (_, _, context), forward in zip(group, forwards, strict=True)])
        compute_ms = (time.perf_counter() - started) * 1e3
        self.counts["session_forwards"] += 1
        self.counts["session_requests_batched"] += len(group) if len(group) > 1 else 0
        return [(edge, self._answer(request, context, forward, rows, compute_ms, len(group)))
                for (edge, request, context), forward, rows in zip(group, forwards, logits, strict=True)]

    def _answer(self, request: TokenRequest | DraftVerify, context: SessionContext, forward: Forward,
                logits: torch.Tensor, compute_ms: float, sharing: int) -> CloudDownMessage:
        """The reply to one request from its logits; counts its tokens and its share of the forward."""
        if isinstance(request, TokenRequest):
            token = context.token_from(request.position, forward, logits, compute_ms)
            self.counts["tokens_served"] += 1
            self._count_layers("collaborative", context, forward, tokens=1, sharing=sharing)
            return TokenReply(request.session_id, request.request_id, token.position, token.token_id,
                              min(1.0, token.probability), token.compute_ms)
        try:
            verdict = context.verdict_from(request, forward, logits, compute_ms)
        except ValueError as error:  # a draft its own distribution gives probability 0: refuse, keep serving
            logger.warning("%s: session %s verify %d refused: %s", self.worker_id, request.session_id,
                           request.request_id, error)
            return ChunkRejected(request.session_id, -1, f"verify refused: {error}"[:1000])
        decided = verdict.accepted + int(verdict.token_id >= 0)
        self._count_layers("speculative", context, forward, tokens=decided, sharing=sharing)
        self.counts["drafts_verified"] += len(request.draft_ids)
        self.counts["drafts_accepted"] += verdict.accepted
        self.counts["tokens_served"] += decided
        return DraftVerdict(request.session_id, request.request_id, verdict.first_position, verdict.accepted,
                            verdict.token_id, verdict.compute_ms, verdict.positions_run)

    def _generate_batch(self, envelopes: list[Envelope]) -> None:
        """Cloud-only generations of one model: stepped together until none is left (continuous batching).

        Generations of the same model queued meanwhile join between steps (`WorkQueue.take_joining`),
        up to `max_batch` in flight; each reply goes out as soon as its own answer is done.
        """
        key = envelopes[0].message.model_id  # type: ignore[union-attr]
        self.counts["generate_batches"] += 1
        self.counts["generate_requests"] += len(envelopes)
        try:
            model = self.models.get(key)
        except ModelStoreError as error:
            for envelope in envelopes:
                self._reply(envelope, RequestRefused(envelope.message.request_id, str(error)[:1000]))  # type: ignore[union-attr]
            return
        batch = GenerationBatch(model, self.config.max_batch)
        self._join(batch, envelopes)
        while batch:
            try:
                with self.cost.measure("cloud_only"):
                    result = batch.step()
            except Exception as error:  # refuse what is in flight (the edges answer locally), keep serving
                logger.exception("%s: a step of %d cloud-only generations failed", self.worker_id, len(batch))
                for generation in batch.active:
                    self._reply_alone(generation.handle, RequestRefused(generation.handle.message.request_id,
                                                                        f"generation failed: {error}"[:1000]))
                return
            self.cost.add("cloud_only", tokens=result.tokens, layer_passes=model.num_layers,
                          layer_rows=model.num_layers * result.rows)
            for generation in result.finished:
                self._reply_alone(generation.handle, GenerateReply(generation.handle.message.request_id,
                                                                   tuple(generation.token_ids), generation.ttft_ms,
                                                                   generation.total_ms))
            self._serve_waiting()
            if batch.room:
                joining = [job.payload for job in self._work.take_joining(key, batch.room)]
                self.counts["generate_requests"] += len(joining)
                self.counts["generations_joined_running"] += len(joining)
                self._join(batch, joining)

    def _join(self, batch: GenerationBatch, envelopes: list[Envelope]) -> None:
        """Add the requests to the batch; one that cannot run is refused with the reason, alone."""
        for envelope in envelopes:
            request: GenerateRequest = envelope.message  # type: ignore[assignment]
            reason = refusal(batch.model, request.prompt_ids, request.max_new_tokens, self.config.max_positions)
            if reason is not None:
                logger.warning("%s: refused generation %s: %s", self.worker_id, request.request_id, reason)
                self._reply_alone(envelope, RequestRefused(request.request_id, reason))
                continue
            batch.add(envelope, list(request.prompt_ids), request.max_new_tokens,
                      batch.model.eos_token_id if request.stop_at_eos else None)

    def _reply(self, envelope: Envelope, reply: CloudReply) -> None:
        if envelope.response_topic:
            self.bus.reply(envelope, reply)

    def _reply_alone(self, envelope: Envelope, reply: CloudReply) -> None:
        """A reply among a batch's: one that cannot go out is logged and must not end the others' answers."""
        self._guarded(lambda: self._reply(envelope, reply))

    def _count_layers(self, mode: str, context: SessionContext, forward: Forward, tokens: int, sharing: int) -> None:
        """A request's share of a forward over layers [k, L) shared by `sharing` requests."""
        layers = context.model.num_layers - context.split_layer
        self.cost.add(mode, tokens=tokens, layer_passes=layers / sharing, layer_rows=layers * forward.rows.shape[1])

    @torch.no_grad()
    def _naive_step(self, step: NaiveStep) -> TokenReply:
        """Stateless: run layers [k, L) over the whole uploaded context, answer the last position's token."""
        self.counts["naive_steps"] += 1
        started = time.perf_counter()
        model = self._model(step.model_id, step.split_layer, step.hidden_size)
        rows = chunk_rows(step, model.hidden_size, self.config.max_positions)
        with self.cost.measure("naive_split"):
            stack = LayerStack(model, step.split_layer, model.num_layers)
            hidden_states = stack.run(torch.from_numpy(rows.copy()).to(model.dtype).unsqueeze(0)).hidden_states  # (1, T, C)
            assert hidden_states is not None, "a range without exits always reaches its end"
            token, probability = top_token(stack.logits(hidden_states[:, -1:])[0, -1])
        layers = model.num_layers - step.split_layer
        self.cost.add("naive_split", tokens=1, layer_passes=layers, layer_rows=layers * step.count)
        compute_ms = (time.perf_counter() - started) * 1e3
        return TokenReply(step.request_id, 0, step.count - 1, int(token), min(1.0, float(probability)), compute_ms)

    def _model(self, model_id: str, split_layer: int, hidden_size: int) -> LoadedModel:
        """Raises ModelStoreError or ValueError when the request does not fit the model."""
        model = self.models.get(model_id)
        if not 0 < split_layer < model.num_layers:
            raise ValueError(f"split layer {split_layer} outside 1..{model.num_layers - 1} of {model_id}")
        if hidden_size != model.hidden_size:
            raise ValueError(f"hidden size {hidden_size} differs from {model_id}'s {model.hidden_size}")
        return model

    def _send_down(self, edge: str, message: CloudDownMessage) -> None:
        session_id = getattr(message, "session_id", "")
        self.bus.publish(topics.INFER_DOWN, message, edge=edge, session=session_id)
