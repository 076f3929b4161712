"""The pipeline coordinator: places a model's layers on stage nodes, drives one generation, moves layers as it goes.

It runs where the request arrives (the center's HTTP API or the command line) and talks to the
stages only over the bus: `StageAssign` to each stage, `StageRun` to the first, `StageHold` when the
policy wants a new split. The first stage answers a hold at a token boundary (`StageHeld`, the
token not yet fed), so a move happens with nothing in flight: every stage takes its new range, keys
and values follow their layers (`transfer`) or every stage starts over and the first one feeds the
whole sequence again (`recompute`), and the run resumes with the held token. No token is lost or
repeated. A stage whose Last Will arrives (membership) is dropped: the others share its layers and
recompute from the last complete token, or the run fails with a clear error. Every wait has a timeout.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from broker import topics
from broker.client import BusClient
from broker.dispatcher import Envelope
from broker.errors import BusError
from broker.messages.membership import NodeDeath
from broker.messages.pipeline import (
    StageFailed,
    StageFinished,
    StageGone,
    StageHeld,
    StageHold,
    StageReady,
    StageReport,
    StageRun,
    StageStop,
    StageTiming,
)
from pipeline.allocation import (
    Allocation,
    AllocationError,
    ModelShape,
    NodeCapability,
    even_split,
    optimal_split,
    parse_allocation,
)
from pipeline.plan import assignments, kv_moves
from pipeline.reallocation import PolicyState, ReallocationConfig, after_token, without_node
from pipeline.tracker import PipelineTracker

logger = logging.getLogger(__name__)

KvMode = Literal["transfer", "recompute"]
KV_MODES: tuple[KvMode, ...] = ("transfer", "recompute")
DEFAULT_SPEED = 1000.0  # layers/s assumed for a node nobody measured (only ratios matter)
DEFAULT_MEMORY_BYTES = 1 << 40  # no memory limit given


class PipelineError(Exception):
    """A pipeline run that cannot go on: bad request, a stage failed, no node can host the layers, a timeout."""


@dataclass(frozen=True, slots=True)
class PipelineRequest:
    """One generation over a pipeline (seed 001's server call)."""

    model_id: str
    node_ids: tuple[str, ...]  # stage nodes in ring order
    prompt_ids: tuple[int, ...]
    max_new_tokens: int = 32
    allocation: tuple[int, ...] | None = None  # layers per node; None = auto (best split for `capabilities`)
    capabilities: tuple[NodeCapability, ...] = ()  # per node; missing nodes get DEFAULT_SPEED, no memory limit
    reallocation: ReallocationConfig = ReallocationConfig()
    kv_mode: KvMode = "transfer"  # how keys/values follow moved layers
    eos_token_id: int = -1  # -1: generate all max_new_tokens
    run_id: str = field(default_factory=lambda: f"pl-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        if not self.node_ids:
            raise PipelineError("a pipeline needs at least one node")
        if not self.prompt_ids:
            raise PipelineError("the prompt is empty")
        if self.max_new_tokens < 1:
            raise PipelineError(f"max_new_tokens {self.max_new_tokens} must be >= 1")
        if self.kv_mode not in KV_MODES:
            raise PipelineError(f"kv_mode {self.kv_mode!r} must be one of {KV_MODES}")


@dataclass(frozen=True, slots=True)
class AllocationChange:
    """A split that came into force at `position` (the next token fed used it)."""

    position: int
    node_ids: tuple[str, ...]
    layers: tuple[int, ...]
    reason: str  # start, imbalance, node_lost:<id>
    imbalance: float = 0.0  # predicted share of token time saved
    pause_s: float = 0.0  # from the hold to the resume
    kv_bytes: int = 0  # keys/values moved over the bus
    at_s: float = 0.0  # seconds since the run started


@dataclass
class PipelineResult:
    run_id: str
    model_id: str
    prompt_tokens: int
    token_ids: list[int]
    token_times_s: list[float]  # when each token reached the coordinator, seconds since the run started
    allocations: list[AllocationChange]
    tracker: PipelineTracker
    total_s: float
    first_token_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first per second of their wall time (moves included)."""
        if len(self.token_times_s) < 2:
            return 0.0
        span = self.token_times_s[-1] - self.token_times_s[0]
        return (len(self.token_times_s) - 1) / span if span > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id, "model_id": self.model_id, "prompt_tokens": self.prompt_tokens,
            "token_ids": self.token_ids, "token_times_s": self.token_times_s,
            "decode_tokens_per_s": self.decode_tokens_per_s, "total_s": self.total_s,
            "first_token_s": self.first_token_s,
            "allocations": [dataclasses.asdict(change) for change in self.allocations],
            "per_node": self.tracker.summary(),
            "per_token": [figures.as_dict() for figures in self.tracker.figures],
        }


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    ready_timeout_s: float = 60.0  # stages must take an assignment (load weights, receive KV) within this
    stall_timeout_s: float = 30.0  # no report for this long fails the run
    kv_timeout_s: float = 30.0  # a stage waits this long for expected keys/values


class PipelineCoordinator:
    """Runs pipeline generations over the bus, one at a time."""

    def __init__(self, bus: BusClient, shape_of: Callable[[str], ModelShape], config: CoordinatorConfig = CoordinatorConfig(),
                 clock: Callable[[], float] = time.perf_counter,
                 on_token: Callable[[str, int, int, Allocation], None] | None = None) -> None:
        self.bus = bus
        self.shape_of = shape_of  # model id -> its shape (layers, bytes); raises PipelineError if unknown
        self.config = config
        self.clock = clock
        self.on_token = on_token  # (run id, position, token id, split in force) after every token
        self._inbox: queue.Queue[Envelope] = queue.Queue()
        self._lock = threading.Lock()
        self._subscribed = False

    def _subscribe(self) -> None:
        if not self._subscribed:
            self.bus.subscribe(topics.PIPELINE_REPORT, self._inbox.put, wait_s=5.0)
            self.bus.subscribe(topics.NODE_DEATH, self._inbox.put, wait_s=5.0)
            self._subscribed = True

    def run(self, request: PipelineRequest) -> PipelineResult:
        """Generate; raises PipelineError (with the reason) when the run cannot finish."""
        with self._lock:
            self._subscribe()
            while not self._inbox.empty():  # reports of earlier runs
                self._inbox.get_nowait()
            run = _Run(self, request)
            try:
                return run.execute()
            finally:
                for node in request.node_ids:
                    try:
                        self.bus.publish(topics.PIPELINE_CONTROL, StageStop(request.run_id), node=node)
                    except BusError as error:
                        logger.warning("pipeline %s: cannot stop %s: %s", request.run_id, node, error)


def start_state(request: PipelineRequest, shape: ModelShape) -> PolicyState:
    """Capabilities (given, else equal) and the starting split: the request's list, else the best for them."""
    given = {node.node_id: node for node in request.capabilities}
    unknown = set(given) - set(request.node_ids)
    if unknown:
        raise PipelineError(f"capabilities name nodes outside the pipeline: {sorted(unknown)}")
    capabilities = tuple(given.get(node, NodeCapability(node, DEFAULT_SPEED, DEFAULT_MEMORY_BYTES))
                         for node in request.node_ids)
    try:
        if request.allocation is not None:
            allocation = parse_allocation(request.node_ids, request.allocation, shape.num_layers)
        elif request.capabilities:
            allocation = optimal_split(capabilities, shape, request.reallocation.objective, request.reallocation.min_layers)
        else:
            allocation = even_split(request.node_ids, shape.num_layers)
    except AllocationError as error:
        raise PipelineError(f"pipeline {request.run_id}: {error}") from error
    return PolicyState(capabilities, allocation)


class _Run:
    """The state of one generation (coordinator side)."""

    def __init__(self, coordinator: PipelineCoordinator, request: PipelineRequest) -> None:
        self.c = coordinator
        self.request = request
        self.shape = coordinator.shape_of(request.model_id)
        self.state = start_state(request, self.shape)
        self.epoch = 0
        self.tokens: dict[int, int] = {}  # position -> token id
        self.token_times: list[float] = []
        self.allocations: list[AllocationChange] = []
        self.tracker = PipelineTracker()
        self.started = coordinator.clock()
        self.first_token_s = 0.0
        self.bd_seqs: dict[str, int] = {}  # each stage's session (StageReady), which its StageGone names
        self.dead: set[str] = set()
        self.pending: tuple[Allocation, float] | None = None  # a move waiting for the hold
        self.finished = False
        self.finish_at = 0  # sequence length the first stage reported finished at

    @property
    def prompt_tokens(self) -> int:
        return len(self.request.prompt_ids)

    def now_s(self) -> float:
        return self.c.clock() - self.started

    def execute(self) -> PipelineResult:
        request = self.request
        logger.info("pipeline %s: %s over %s, start %s", request.run_id, request.model_id, request.node_ids,
                    self.state.allocation.layers)
        self._assign(self.state.allocation, reset=True)
        self.allocations.append(AllocationChange(0, self.state.allocation.node_ids, self.state.allocation.layers, "start"))
        self._send_run(0, list(request.prompt_ids))
        while not self.finished and not (self.finish_at and len(self.tokens) >= self.finish_at - self.prompt_tokens):
            self._handle(self._next_report(self.c.config.stall_timeout_s, "tokens"))
        ids = [self.tokens[position] for position in sorted(self.tokens)]
        return PipelineResult(request.run_id, request.model_id, self.prompt_tokens, ids, self.token_times,
                              self.allocations, self.tracker, self.now_s(), self.first_token_s)

    # ---- waiting on reports --------------------------------------------------------------------

    def _next_report(self, timeout_s: float, waiting_for: str) -> StageReport | NodeDeath:
        deadline = self.c.clock() + timeout_s
        while True:
            left = deadline - self.c.clock()
            if left <= 0:
                raise PipelineError(f"pipeline {self.request.run_id}: no {waiting_for} from the stages within "
                                    f"{timeout_s:.0f} s (epoch {self.epoch}, split {self.state.allocation.layers})")
            try:
                envelope = self.c._inbox.get(timeout=left)
            except queue.Empty:
                continue
            message = envelope.message
            if isinstance(message, NodeDeath | StageGone):  # the node's membership session, or the stage's own
                if self._is_ring_death(message):
                    return message
                continue
            if getattr(message, "run_id", None) == self.request.run_id:
                return message  # type: ignore[return-value]

    def _is_ring_death(self, death: NodeDeath | StageGone) -> bool:
        """A stage in the ring is gone: the Will of the very session that reported it ready (its own StageGone,
        or a membership NodeDeath when a node's one session also carries the stage); older sessions' are ignored."""
        return death.node_id in self.state.allocation.active() and self.bd_seqs.get(death.node_id) == death.bd_seq

    def _assign(self, allocation: Allocation, *, reset: bool, moves: tuple = ()) -> int:
        """Send every stage its range; wait until all are ready. Returns the KV bytes the stages received."""
        self.epoch += 1
        plan = assignments(allocation, self.request.run_id, self.epoch, self.request.model_id, reset=reset,
                           moves=moves, kv_timeout_s=self.c.config.kv_timeout_s)
        for node, assign in plan.items():
            self.c.bus.publish(topics.PIPELINE_CONTROL, assign, node=node)
        waiting, kv_bytes = set(plan), 0
        while waiting:
            report = self._next_report(self.c.config.ready_timeout_s, f"ready from {sorted(waiting)}")
            if isinstance(report, NodeDeath | StageGone):
                raise _NodeLost(report.node_id)
            if isinstance(report, StageFailed) and report.epoch == self.epoch:
                raise PipelineError(f"pipeline {self.request.run_id}: stage {report.node_id} failed: {report.reason}")
            if isinstance(report, StageTiming):  # the held token's timing may come after StageHeld
                self._record(report)
            if isinstance(report, StageReady) and report.epoch == self.epoch:
                waiting.discard(report.node_id)
                self.bd_seqs[report.node_id] = report.bd_seq
                kv_bytes += report.kv_bytes_received
        return kv_bytes

    def _send_run(self, position: int, token_ids: list[int]) -> None:
        first = self.state.allocation.active()[0]
        self.c.bus.publish(topics.PIPELINE_CONTROL,
                           StageRun(self.request.run_id, self.epoch, position, tuple(token_ids), self.prompt_tokens,
                                    self.request.max_new_tokens, self.request.eos_token_id), node=first)

    # ---- the generation ------------------------------------------------------------------------

    def _handle(self, report: StageReport | NodeDeath) -> None:
        try:
            match report:
                case NodeDeath() | StageGone():
                    raise _NodeLost(report.node_id)
                case StageTiming():
                    self._timing(report)
                case StageHeld() if report.epoch == self.epoch:
                    self._move(report)
                case StageFinished() if report.epoch == self.epoch:
                    self.finish_at = report.position  # the last token's timing may still be on its way
                case StageFailed() if report.epoch == self.epoch:
                    raise PipelineError(f"pipeline {self.request.run_id}: stage {report.node_id} failed: {report.reason}")
                case _:
                    logger.debug("pipeline %s: ignoring %s", self.request.run_id, type(report).__name__)
        except _NodeLost as lost:
            self._recover(lost.node_id)

    def _record(self, timing: StageTiming) -> bool:
        """Track a stage's figures; True when it brought a new token."""
        self.tracker.add(timing)
        if timing.token_id < 0:
            return False
        position = timing.position + timing.count
        known = self.tokens.get(position)
        if known is not None:
            if known != timing.token_id:
                raise PipelineError(f"pipeline {self.request.run_id}: position {position} decided twice, "
                                    f"{known} then {timing.token_id}")
            return False  # recomputed after a lost stage: the same token again
        self.tokens[position] = timing.token_id
        self.token_times.append(self.now_s())
        if len(self.tokens) == 1:
            self.first_token_s = self.now_s()
        if self.c.on_token is not None:
            self.c.on_token(self.request.run_id, position, timing.token_id, self.state.allocation)
        return True

    def _timing(self, timing: StageTiming) -> None:
        if not self._record(timing) or timing.epoch != self.epoch or timing.count != 1 or self.pending is not None:
            return
        speeds = self.tracker.speeds_at(timing.position)
        self._learn_head_work(timing, speeds)
        decision = after_token(self.state, speeds, self.shape, self.request.reallocation)
        if decision.new_allocation is None:
            self.state = decision.state
            return
        self.pending = (decision.new_allocation, decision.imbalance)
        self.state = dataclasses.replace(decision.state, allocation=self.state.allocation)  # moved once held
        self.c.bus.publish(topics.PIPELINE_CONTROL, StageHold(self.request.run_id, self.epoch),
                           node=self.state.allocation.active()[0])

    def _learn_head_work(self, last: StageTiming, speeds: dict[str, float]) -> None:
        """Blend the measured cost of the LM head (in layers of the last node) into the shape, like speeds."""
        speed = speeds.get(last.node_id)
        if speed is None or last.head_s <= 0:
            return
        weight = self.request.reallocation.performance_weight
        head_work = (1 - weight) * self.shape.head_work + weight * last.head_s * speed
        self.shape = dataclasses.replace(self.shape, head_work=head_work)

    def _move(self, held: StageHeld) -> None:
        """Every stage is idle (the first one holds the next token): move layers, resume with that token."""
        assert self.pending is not None, "a hold nobody asked for"
        new, share = self.pending
        self.pending = None
        hold_started = self.c.clock()
        old = self.state.allocation
        if self.request.kv_mode == "transfer":
            kv_bytes = self._assign(new, reset=False, moves=kv_moves(old, new))
            self.state = PolicyState(self.state.capabilities, new, 0)
            self._send_run(held.position, [held.next_token])
        else:
            kv_bytes = self._assign(new, reset=True)
            self.state = PolicyState(self.state.capabilities, new, 0)
            self._send_run(0, self._sequence_through(held.position) + [held.next_token])
        pause_s = self.c.clock() - hold_started
        self.allocations.append(AllocationChange(held.position, new.node_ids, new.layers, "imbalance", share, pause_s,
                                                 kv_bytes, self.now_s()))
        logger.info("pipeline %s: moved %s -> %s at position %d in %.3f s (%s, %d kv bytes)", self.request.run_id,
                    old.layers, new.layers, held.position, pause_s, self.request.kv_mode, kv_bytes)

    def _sequence_through(self, end: int) -> list[int]:
        """Token ids of positions [0, end): the prompt, then the generated tokens in order."""
        generated = [self.tokens[position] for position in range(self.prompt_tokens, end)]
        return list(self.request.prompt_ids) + generated

    def _recover(self, node_id: str) -> None:
        """A stage died: the others take its layers and recompute from the last complete token."""
        started = self.c.clock()
        self.dead.add(node_id)
        logger.warning("pipeline %s: stage %s died (membership); reassigning its layers", self.request.run_id, node_id)
        try:
            self.state = without_node(self.state, node_id, self.shape, self.request.reallocation)
        except (AllocationError, ValueError) as error:
            raise PipelineError(f"pipeline {self.request.run_id}: stage {node_id} died and the remaining nodes "
                                f"cannot host its layers: {error}") from error
        self.pending = None
        end = self.prompt_tokens + len(self.tokens)
        if len(self.tokens) >= self.request.max_new_tokens:
            self.finished = True
            return
        try:
            self._assign(self.state.allocation, reset=True)
        except _NodeLost as lost:
            self._recover(lost.node_id)
            return
        sequence = self._sequence_through(end)
        self._send_run(0, sequence)
        self.allocations.append(AllocationChange(end, self.state.allocation.node_ids, self.state.allocation.layers,
                                                 f"node_lost:{node_id}", 0.0, self.c.clock() - started, 0, self.now_s()))


class _NodeLost(Exception):
    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id
