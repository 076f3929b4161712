"""Cloud-edge collaborative generation (CE-CoLLM) on the edge, plus its baselines, in one harness.

Modes (CollabConfig.mode):
- `standalone`: the edge alone; a token no exit is sure of takes the split layer's exit head.
- `collaborative`: tokens an exit head is sure of are emitted at the edge; the others are asked of the
  cloud, which holds layers [k, L) and the session's KV cache, kept current from the layer-k states
  the edge streams in the background. Cloud silent past the deadline: the rest of the answer is
  finished locally (standalone) and the record says so.
- `cloud_only`: the cloud generates the whole answer from the prompt.
- `naive_split`: the edge runs [0, k); every step sends the whole context's fp32 layer-k states to a
  stateless cloud worker.
Every mode returns the same `CollabGeneration` with a per-token record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from edge_node.collab_config import CollabConfig
from edge_node.collab_edge import NO_EXIT, EdgeDecision, EdgeStack
from edge_node.collab_link import CloudSession, CloudUnavailableError, CollabClient, LinkCounters, LinkFaults
from models.exit_policy import ExitPolicy
from models.loaded import LoadedModel

logger = logging.getLogger(__name__)

DecidedBy = Literal["edge", "cloud", "fallback"]
_NEVER_EXIT = 1.01  # exit rule thresholds above 1 disable the exit (a top probability can round to 1.0)


@dataclass(frozen=True, slots=True)
class CollabToken:
    position: int  # index of the generated token in the whole sequence (prompt included)
    token_id: int
    decided_by: DecidedBy  # edge exit, cloud, or the edge after the cloud fell silent
    exit_layer: int  # edge: exit layer; cloud: the model's depth; fallback: the split layer
    latency_ms: float  # step start -> token known
    bytes_up: int  # payload bytes sent towards the cloud during this step
    bytes_down: int


@dataclass(frozen=True, slots=True)
class CollabGeneration:
    mode: str
    prompt_tokens: int
    token_ids: tuple[int, ...]
    tokens: tuple[CollabToken, ...]
    ttft_s: float
    total_s: float
    bytes_up: int  # whole answer, session open and close included
    bytes_down: int
    cloud_requests: int  # tokens asked of the cloud (every token for cloud_only / naive_split)
    fallback: bool  # the cloud fell silent (or was unreachable) and the edge finished the answer
    fallback_position: int  # position of the first token decided locally after that, or -1
    worker_id: str = ""
    reopens: int = 0
    resends: int = 0
    chunks: int = 0


def exit_policy_for(model: LoadedModel, config: CollabConfig) -> ExitPolicy:
    """The configured operating point: the model's calibrated policy, or one top-probability threshold."""
    layers = tuple(layer for layer in config.exit_layers if layer <= config.split_layer)
    if config.threshold is None:
        assert model.exit_policy is not None, f"{model.model_id} has no calibrated exit policy; set a threshold"
        rules = tuple(rule for rule in model.exit_policy.rules if rule.exit_layer in layers)
        policy = ExitPolicy(rules)
        if config.exit_thresholds:
            policy = policy.with_thresholds(dict(zip(config.exit_layers, config.exit_thresholds, strict=True)))
        return policy
    threshold = _NEVER_EXIT if config.threshold >= 1.0 else config.threshold
    return ExitPolicy.top_probability({layer: threshold for layer in layers})


@torch.no_grad()
def generate(
    model: LoadedModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    config: CollabConfig,
    client: CollabClient | None = None,
    *,
    stop_at_eos: bool = True,
    faults: LinkFaults | None = None,
    on_token: Callable[[CollabToken], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> CollabGeneration:
    """Generate greedily in `config.mode`. Modes other than standalone need `client`.

    Never raises for cloud trouble: an unreachable or silent cloud ends in a local finish, recorded as
    a fallback. `on_token` is called after every token (progress, tests).
    """
    assert prompt_ids, "prompt must not be empty"
    assert max_new_tokens >= 1, "max_new_tokens must be >= 1"
    assert config.mode == "standalone" or client is not None, f"mode {config.mode} needs a CollabClient"
    run = _Run(model, prompt_ids, max_new_tokens, config, client, stop_at_eos, faults or LinkFaults(), on_token, clock)
    if config.mode == "cloud_only":
        return run.cloud_only()
    if config.mode == "naive_split":
        return run.naive_split()
    return run.edge_led()


class _Run:
    """State of one answer; each mode is a method."""

    def __init__(self, model: LoadedModel, prompt_ids: list[int], max_new_tokens: int, config: CollabConfig,
                 client: CollabClient | None, stop_at_eos: bool, faults: LinkFaults,
                 on_token: Callable[[CollabToken], None] | None, clock: Callable[[], float]) -> None:
        self.model, self.prompt_ids, self.max_new_tokens = model, prompt_ids, max_new_tokens
        self.config, self.client, self.stop_at_eos, self.faults = config, client, stop_at_eos, faults
        self.on_token, self.clock = on_token, clock
        self.counters = LinkCounters()
        self.tokens: list[CollabToken] = []
        self.start = clock()
        self.first_token_at = 0.0
        self.cloud_requests = 0
        self.fallback_position = -1
        self.worker_id = ""  # the last worker that held this answer's session

    # ---- standalone and collaborative ------------------------------------------------------------

    def edge_led(self) -> CollabGeneration:
        config, model = self.config, self.model
        session = self._open_session() if config.mode == "collaborative" else None
        sink = None if session is None else _session_sink(session)
        stack = EdgeStack(model, config.split_layer, exit_policy_for(model, config), sink, self.clock)
        feed = list(self.prompt_ids)
        for step in range(self.max_new_tokens):
            step_start, up_before, down_before = self.clock(), self._up(session), self._down(session)
            # The prompt pass completes every layer so its upload starts before the first cloud request.
            decision = stack.run(feed, complete=step == 0)
            token, decided_by, exit_layer, known_at = self._decide(decision, stack, session)
            if decided_by == "fallback" and session is not None:
                self._absorb(session, notify=False)
                session = None
                stack.on_layer_k = None
            record = CollabToken(stack.length, token, decided_by, exit_layer, (known_at - step_start) * 1e3,
                                 self._up(session) - up_before if session else 0,
                                 self._down(session) - down_before if session else 0)
            if self._emit(record):
                break
            feed = [token]
        if session is not None:
            self._absorb(session, notify=config.session_close)
        return self._result(session.worker_id if session else self.worker_id)

    def _decide(self, decision: EdgeDecision, stack: EdgeStack,
                session: CloudSession | None) -> tuple[int, DecidedBy, int, float]:
        if decision.token_id != NO_EXIT:
            return decision.token_id, "edge", decision.exit_layer, decision.decided_at
        if session is None:
            by: DecidedBy = "fallback" if self.fallback_position >= 0 else "edge"
            return decision.local_token_id, by, self.config.split_layer, self.clock()
        self.cloud_requests += 1
        answer = session.ask(stack.length - 1, self.config.cloud_deadline_s, self.config.max_reopens)
        if answer is not None:
            return answer.token_id, "cloud", self.model.num_layers, self.clock()
        self.fallback_position = stack.length
        logger.warning("session %s: cloud silent; finishing locally from position %d", session.session_id, stack.length)
        return decision.local_token_id, "fallback", self.config.split_layer, self.clock()

    def _open_session(self) -> CloudSession | None:
        assert self.client is not None
        try:
            session = self.client.open_session(
                self.model.model_id, self.config.split_layer, self.model.hidden_size,
                timeout_s=self.config.open_timeout_s, chunk_positions=self.config.upload_chunk_positions,
                faults=self.faults,
            )
        except CloudUnavailableError as error:
            logger.warning("no cloud session (%s): answering standalone", error)
            self.fallback_position = len(self.prompt_ids)
            return None
        self.worker_id = session.worker_id
        return session

    def _absorb(self, session: CloudSession, notify: bool) -> None:
        """Close the session and fold its byte counts into the answer's."""
        session.close(notify=notify)
        self.worker_id = session.worker_id
        for name in ("bytes_up", "bytes_down", "chunks", "resends", "reopens"):
            setattr(self.counters, name, getattr(self.counters, name) + getattr(session.counters, name))

    # ---- baselines -------------------------------------------------------------------------------

    def cloud_only(self) -> CollabGeneration:
        assert self.client is not None
        try:
            reply = self.client.generate_cloud_only(self.model.model_id, self.prompt_ids, self.max_new_tokens,
                                                    timeout_s=self.config.cloud_deadline_s * self.max_new_tokens,
                                                    counters=self.counters, stop_at_eos=self.stop_at_eos)
        except CloudUnavailableError as error:
            logger.warning("cloud-only generation failed (%s): answering standalone", error)
            self.fallback_position = len(self.prompt_ids)
            return _as_mode(_Run(self.model, self.prompt_ids, self.max_new_tokens,
                                               _standalone(self.config), None, self.stop_at_eos, self.faults,
                                               self.on_token, self.clock).edge_led(), "cloud_only", fallback=True)
        elapsed_s = self.clock() - self.start
        count = len(reply.token_ids)
        decode_s = (reply.total_ms - reply.first_token_ms) / 1e3
        first_s = max(0.0, elapsed_s - decode_s)  # network + prompt + first token, as the edge sees it
        per_token_s = decode_s / max(1, count - 1)
        self.cloud_requests = count
        for index, token in enumerate(reply.token_ids):
            latency_s = first_s if index == 0 else per_token_s
            self.first_token_at = self.first_token_at or self.start + first_s
            record = CollabToken(len(self.prompt_ids) + index, token, "cloud", self.model.num_layers, latency_s * 1e3,
                                 self.counters.bytes_up if index == 0 else 0,
                                 self.counters.bytes_down if index == count - 1 else 0)
            self.tokens.append(record)
            if self.on_token:
                self.on_token(record)
        return self._result("")

    def naive_split(self) -> CollabGeneration:
        assert self.client is not None
        rows: list[np.ndarray] = []
        stack = EdgeStack(self.model, self.config.split_layer, None,
                          lambda first, states: rows.append(states.float().numpy()), self.clock)
        feed = list(self.prompt_ids)
        cloud_alive = True
        for _ in range(self.max_new_tokens):
            step_start, up_before, down_before = self.clock(), self.counters.bytes_up, self.counters.bytes_down
            decision = stack.run(feed, complete=True)
            token, decided_by, exit_layer = decision.local_token_id, "fallback", self.config.split_layer
            if cloud_alive:
                self.cloud_requests += 1
                try:
                    answer = self.client.naive_step(self.model.model_id, self.config.split_layer, np.concatenate(rows),
                                                    timeout_s=self.config.cloud_deadline_s, counters=self.counters)
                    token, decided_by, exit_layer = answer.token_id, "cloud", self.model.num_layers
                except CloudUnavailableError as error:
                    logger.warning("naive split: cloud silent (%s); finishing locally", error)
                    cloud_alive = False
                    self.fallback_position = stack.length
            record = CollabToken(stack.length, token, decided_by, exit_layer, (self.clock() - step_start) * 1e3,
                                 self.counters.bytes_up - up_before, self.counters.bytes_down - down_before)
            if self._emit(record):
                break
            feed = [token]
        return self._result("")

    # ---- shared ----------------------------------------------------------------------------------

    def _emit(self, record: CollabToken) -> bool:
        """Record a token; True when generation should stop (end of sequence)."""
        self.tokens.append(record)
        self.first_token_at = self.first_token_at or self.clock()
        if self.on_token is not None:
            self.on_token(record)
        return self.stop_at_eos and record.token_id == self.model.eos_token_id

    def _result(self, worker_id: str) -> CollabGeneration:
        return CollabGeneration(
            mode=self.config.mode, prompt_tokens=len(self.prompt_ids),
            token_ids=tuple(t.token_id for t in self.tokens), tokens=tuple(self.tokens),
            ttft_s=(self.first_token_at or self.start) - self.start, total_s=self.clock() - self.start,
            bytes_up=self.counters.bytes_up, bytes_down=self.counters.bytes_down,
            cloud_requests=self.cloud_requests, fallback=self.fallback_position >= 0,
            fallback_position=self.fallback_position, worker_id=worker_id, reopens=self.counters.reopens,
            resends=self.counters.resends, chunks=self.counters.chunks,
        )

    @staticmethod
    def _up(session: CloudSession | None) -> int:
        return session.counters.bytes_up if session else 0

    @staticmethod
    def _down(session: CloudSession | None) -> int:
        return session.counters.bytes_down if session else 0


def _session_sink(session: CloudSession) -> Callable[[int, torch.Tensor], None]:
    def sink(first_position: int, hidden_states: torch.Tensor) -> None:
        session.add_rows(first_position, hidden_states.to(torch.float16).numpy())  # (n, C) fp16

    return sink


def _standalone(config: CollabConfig) -> CollabConfig:
    return replace(config, mode="standalone")


def _as_mode(generation: CollabGeneration, mode: str, fallback: bool) -> CollabGeneration:
    return replace(generation, mode=mode, fallback=fallback,
                   fallback_position=generation.prompt_tokens if fallback else generation.fallback_position)
