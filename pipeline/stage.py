"""A pipeline stage: one node running its layer range of a model over the bus, with its own KV cache.

The stage subscribes to its control topic and to what other stages address to it. Handlers only
queue; one worker thread does the work in arrival order, so a stage never runs two passes at once
and a slow pass never stalls the bus client. A `StageHold` sets a flag at once (the first stage
checks it at the next token boundary). A bad message is reported (`StageFailed`) or dropped with a
log line; the stage itself keeps running.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from broker import topics
from broker.client import BusClient
from broker.dispatcher import Envelope
from broker.messages.pipeline import (
    KvChunk,
    StageAssign,
    StageFailed,
    StageFinished,
    StageHeld,
    StageHold,
    StageReady,
    StageRun,
    StageStates,
    StageStop,
    StageTiming,
    StageToken,
)
from models.decoding import LayerStack
from models.errors import ModelStoreError
from models.loaded import LoadedModel
from models.store import ModelStore
from pipeline import kv_state

logger = logging.getLogger(__name__)

_IDLE_POLL_S = 0.2  # how often an idle worker looks at KV deadlines


@dataclass
class _Run:
    """What a stage knows of one run."""

    run_id: str
    assign: StageAssign
    stack: LayerStack
    assigned_at: float
    kv_waiting: set[int] = field(default_factory=set)  # layers whose keys/values have not arrived yet
    kv_bytes: int = 0
    build_s: float = 0.0
    ready: bool = False
    # first stage only: the generation it drives
    prompt_tokens: int = 0
    max_new_tokens: int = 0
    eos_token_id: int = -1


@dataclass(frozen=True, slots=True)
class _Item:
    envelope: Envelope
    arrived_at: float  # our clock when the handler queued it


class PipelineStage:
    """One node's stage worker. `start()` subscribes and starts the worker; `stop()` ends it."""

    def __init__(self, node_id: str, bus: BusClient, store: ModelStore, *, bd_seq: int = 0, verify_weights: bool = True,
                 clock: Callable[[], float] = time.perf_counter, on_model_loaded: Callable[[LoadedModel], None] | None = None,
                 after_compute: Callable[[float, float], None] | None = None) -> None:
        self.node_id = node_id
        self.bd_seq = bd_seq  # of the bus session whose Last Will announces this stage's death
        self.bus = bus
        self.store = store
        self.verify_weights = verify_weights  # sha256 of the weight files when a model is first loaded
        self.clock = clock
        self.on_model_loaded = on_model_loaded  # e.g. the layer-delay emulation hooks
        self.after_compute = after_compute  # called with each pass's wall and CPU seconds (emulation/pass_delay.py)
        self._cpu_started = 0.0
        self._models: dict[str, LoadedModel] = {}
        self._runs: dict[str, _Run] = {}
        self._early_kv: dict[tuple[str, int], list[KvChunk]] = {}  # pieces that came before their assignment
        self._holds: set[tuple[str, int]] = set()
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=f"stage-{node_id}", daemon=True)

    def start(self, wait_s: float = 5.0) -> PipelineStage:
        self.bus.subscribe(topics.PIPELINE_CONTROL, self._enqueue, wait_s=wait_s, node=self.node_id)
        self.bus.subscribe(topics.PIPELINE_LINK, self._enqueue, wait_s=wait_s, target=self.node_id)
        self.bus.subscribe(topics.PIPELINE_KV, self._enqueue, wait_s=wait_s, target=self.node_id)
        self._thread.start()
        logger.info("pipeline stage %s ready", self.node_id)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # ---- bus side ------------------------------------------------------------------------------

    def _enqueue(self, envelope: Envelope) -> None:
        message = envelope.message
        if isinstance(message, StageHold):
            self._holds.add((message.run_id, message.epoch))
        self._queue.put(_Item(envelope, self.clock()))

    def _report(self, message: object) -> None:
        self.bus.publish(topics.PIPELINE_REPORT, message, node=self.node_id)  # type: ignore[arg-type]

    # ---- worker --------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=_IDLE_POLL_S)
            except queue.Empty:
                self._check_kv_deadlines()
                continue
            if item is None:
                return
            try:
                self._handle(item)
            except Exception as error:  # one bad message never kills the stage
                logger.exception("stage %s: %s failed", self.node_id, type(item.envelope.message).__name__)
                run_id = getattr(item.envelope.message, "run_id", "")
                run = self._runs.get(run_id)
                if run is not None:
                    self._report(StageFailed(run_id, run.assign.epoch, self.node_id, f"{type(error).__name__}: {error}"[:2000]))

    def _handle(self, item: _Item) -> None:
        message = item.envelope.message
        match message:
            case StageAssign():
                self._assign(message)
            case StageRun():
                self._start_run(message)
            case StageStates():
                self._states(message, item, item.envelope.params.get("source", ""))
            case StageToken():
                self._token(message, item, item.envelope.params.get("source", ""))
            case KvChunk():
                self._kv(message)
            case StageStop():
                self._runs.pop(message.run_id, None)
                logger.info("stage %s: run %s stopped", self.node_id, message.run_id)
            case StageHold():
                self._maybe_hold_idle(message)
            case _:
                logger.warning("stage %s: ignoring %s", self.node_id, type(message).__name__)

    def _current(self, run_id: str, epoch: int, source: str | None = None) -> _Run | None:
        run = self._runs.get(run_id)
        if run is None or run.assign.epoch != epoch or not run.ready:
            logger.debug("stage %s: stale or early message for run %s epoch %d", self.node_id, run_id, epoch)
            return None
        if source is not None and source != run.assign.predecessor:
            logger.warning("stage %s: run %s: %s is not my predecessor %s", self.node_id, run_id, source,
                           run.assign.predecessor)
            return None
        return run

    # ---- assignment and KV hand-over -----------------------------------------------------------

    def _model(self, model_id: str) -> LoadedModel:
        model = self._models.get(model_id)
        if model is None:
            model = self._models[model_id] = self.store.load(model_id, verify=self.verify_weights)
            if self.on_model_loaded is not None:
                self.on_model_loaded(model)
        return model

    def _assign(self, assign: StageAssign) -> None:
        old = self._runs.get(assign.run_id)
        if old is not None and assign.epoch <= old.assign.epoch:
            logger.warning("stage %s: stale assignment epoch %d of run %s", self.node_id, assign.epoch, assign.run_id)
            return
        try:
            model = self._model(assign.model_id)
        except ModelStoreError as error:
            self._report(StageFailed(assign.run_id, assign.epoch, self.node_id, f"cannot load {assign.model_id}: {error}"))
            return
        if assign.end > model.num_layers:
            self._report(StageFailed(assign.run_id, assign.epoch, self.node_id,
                                     f"layers [{assign.start}, {assign.end}) outside {assign.model_id}'s {model.num_layers}"))
            return
        if old is not None and not assign.reset:
            for piece in assign.kv_sends:  # our old layers' keys/values go with them
                for layer in range(piece.start, piece.end):
                    chunk = kv_state.export_layer(old.stack, layer, assign.run_id, assign.epoch)
                    self.bus.publish(topics.PIPELINE_KV, chunk, run=assign.run_id, source=self.node_id, target=piece.node_id)
        started = self.clock()
        stack = kv_state.new_stack(model, assign.start, assign.end)
        build_s = self.clock() - started
        run = _Run(assign.run_id, assign, stack, started, build_s=build_s)
        if old is not None:
            run.prompt_tokens, run.max_new_tokens, run.eos_token_id = old.prompt_tokens, old.max_new_tokens, old.eos_token_id
        if old is not None and not assign.reset:
            for layer in range(max(assign.start, old.stack.start), min(assign.end, old.stack.end)):
                kv_state.copy_layer(old.stack, stack, layer)
            run.kv_waiting = {layer for piece in assign.kv_expected for layer in range(piece.start, piece.end)}
        elif not assign.reset:
            run.kv_waiting = {layer for piece in assign.kv_expected for layer in range(piece.start, piece.end)}
        self._runs[assign.run_id] = run
        for chunk in self._early_kv.pop((assign.run_id, assign.epoch), []):
            self._import(run, chunk)
        self._early_kv = {key: chunks for key, chunks in self._early_kv.items() if key[0] != assign.run_id or key[1] > assign.epoch}
        self._ready_if_complete(run)

    def _kv(self, chunk: KvChunk) -> None:
        run = self._runs.get(chunk.run_id)
        if run is None or run.assign.epoch < chunk.epoch:
            self._early_kv.setdefault((chunk.run_id, chunk.epoch), []).append(chunk)
            return
        if run.assign.epoch != chunk.epoch:
            logger.warning("stage %s: stale kv for layer %d of run %s", self.node_id, chunk.layer, chunk.run_id)
            return
        self._import(run, chunk)
        self._ready_if_complete(run)

    def _import(self, run: _Run, chunk: KvChunk) -> None:
        if chunk.layer not in run.kv_waiting:
            logger.warning("stage %s: unexpected kv for layer %d of run %s", self.node_id, chunk.layer, run.run_id)
            return
        kv_state.import_layer(run.stack, chunk)
        run.kv_waiting.discard(chunk.layer)
        run.kv_bytes += len(chunk.keys) + len(chunk.values)

    def _ready_if_complete(self, run: _Run) -> None:
        if run.ready or run.kv_waiting:
            return
        positions = kv_state.cached_positions(run.stack)
        if positions is None:
            self._fail(run, "keys/values of the new range cover different positions")
            return
        run.stack.length = positions
        run.ready = True
        assign = run.assign
        self._report(StageReady(run.run_id, assign.epoch, self.node_id, assign.start, assign.end, positions,
                                run.kv_bytes, self.clock() - run.assigned_at, run.build_s, self.bd_seq))

    def _check_kv_deadlines(self) -> None:
        now = self.clock()
        for run in list(self._runs.values()):
            if not run.ready and run.kv_waiting and now - run.assigned_at > run.assign.kv_timeout_s:
                self._fail(run, f"keys/values of layers {sorted(run.kv_waiting)} did not arrive within "
                                f"{run.assign.kv_timeout_s:.0f} s")
                run.kv_waiting.clear()

    def _fail(self, run: _Run, reason: str) -> None:
        logger.error("stage %s: run %s: %s", self.node_id, run.run_id, reason)
        self._report(StageFailed(run.run_id, run.assign.epoch, self.node_id, reason))

    # ---- generation ----------------------------------------------------------------------------

    def _start_run(self, start: StageRun) -> None:
        run = self._current(start.run_id, start.epoch)
        if run is None:
            self._report(StageFailed(start.run_id, start.epoch, self.node_id, "run not assigned here (or not ready)"))
            return
        if not run.assign.first:
            self._fail(run, "only the first stage takes token ids")
            return
        run.prompt_tokens, run.max_new_tokens, run.eos_token_id = start.prompt_tokens, start.max_new_tokens, start.eos_token_id
        self._holds.discard((start.run_id, start.epoch))
        self._feed(run, list(start.token_ids), start.position, receive_s=0.0, queue_s=0.0)

    def _feed(self, run: _Run, token_ids: list[int], position: int, receive_s: float, queue_s: float) -> None:
        """First stage: embed and run token ids at `position`, pass the states on."""
        started, self._cpu_started = self.clock(), time.thread_time()
        result = run.stack.run(run.stack.embed([token_ids]), position=position)
        assert result.hidden_states is not None
        self._forward(run, result.hidden_states, position, started, receive_s, queue_s)

    def _states(self, message: StageStates, item: _Item, source: str) -> None:
        run = self._current(message.run_id, message.epoch, source)
        if run is None:
            return
        if message.hidden_size != run.stack.model.hidden_size:
            self._fail(run, f"states of width {message.hidden_size}, the model's is {run.stack.model.hidden_size}")
            return
        if message.layer != run.assign.start:
            self._fail(run, f"states after layer {message.layer}, this stage starts at {run.assign.start}")
            return
        received_at = self.clock()
        receive_s = max(0.0, (time.time_ns() - message.sent_at_ns) / 1e9 - (received_at - item.arrived_at)) if message.sent_at_ns else 0.0
        hidden = kv_state.states_from_bytes(message.data, message.count, message.hidden_size, run.stack.model.dtype)
        started, self._cpu_started = self.clock(), time.thread_time()
        result = run.stack.run(hidden, position=message.position)
        assert result.hidden_states is not None
        self._forward(run, result.hidden_states, message.position, started, receive_s, started - item.arrived_at)

    @torch.no_grad()
    def _forward(self, run: _Run, hidden_states: torch.Tensor, position: int, started: float,
                 receive_s: float, queue_s: float) -> None:
        """Pass the range's output on: states to the successor, or (last stage) the token to the first."""
        assign = run.assign
        self._emulate(started)
        computed = self.clock()
        count = hidden_states.shape[1]
        token_id, head_s = -1, 0.0
        if assign.last:
            token_id = int(run.stack.logits(hidden_states[:, -1:])[0, -1].argmax())
            self._emulate(computed)
            head_s = self.clock() - computed
            send_started = self.clock()
            if assign.first:  # a single stage: the token comes straight back to us
                self._queue.put(_Item(Envelope("", None, {"source": self.node_id},
                                               StageToken(run.run_id, assign.epoch, position + count, token_id, time.time_ns())),
                                      self.clock()))
            else:
                self.bus.publish(topics.PIPELINE_LINK, StageToken(run.run_id, assign.epoch, position + count, token_id,
                                 time.time_ns()), run=run.run_id, source=self.node_id, target=assign.successor)
        else:
            send_started = self.clock()
            data = kv_state.states_to_bytes(hidden_states)
            self.bus.publish(topics.PIPELINE_LINK,
                             StageStates(run.run_id, assign.epoch, position, count, hidden_states.shape[2], assign.end,
                                         data, time.time_ns()),
                             run=run.run_id, source=self.node_id, target=assign.successor)
        send_s = self.clock() - send_started
        self._report(StageTiming(run.run_id, assign.epoch, self.node_id, position, count, assign.end - assign.start,
                                 computed - started, head_s, send_s, receive_s, queue_s, token_id))

    def _emulate(self, since: float) -> None:
        if self.after_compute is not None:
            cpu_now = time.thread_time()
            self.after_compute(self.clock() - since, cpu_now - self._cpu_started)
            self._cpu_started = time.thread_time()

    def _token(self, message: StageToken, item: _Item, source: str) -> None:
        run = self._current(message.run_id, message.epoch, source)
        if run is None:
            return
        if not run.assign.first:
            self._fail(run, "a token came to a stage that is not the first")
            return
        generated = message.position + 1 - run.prompt_tokens
        if generated >= run.max_new_tokens or message.token_id == run.eos_token_id:
            self._report(StageFinished(run.run_id, run.assign.epoch, message.position + 1))
            return
        if (run.run_id, run.assign.epoch) in self._holds:
            self._holds.discard((run.run_id, run.assign.epoch))
            self._report(StageHeld(run.run_id, run.assign.epoch, message.position, message.token_id))
            return
        receive_s = max(0.0, (time.time_ns() - message.sent_at_ns) / 1e9 - (self.clock() - item.arrived_at)) if message.sent_at_ns else 0.0
        self._feed(run, [message.token_id], message.position, receive_s, self.clock() - item.arrived_at)

    def _maybe_hold_idle(self, hold: StageHold) -> None:
        """A hold is answered at the next token boundary; nothing to do here unless the run is unknown."""
        if hold.run_id not in self._runs:
            self._holds.discard((hold.run_id, hold.epoch))
