"""Cloud-edge collaborative generation (CE-CoLLM) on the edge, plus its baselines, in one harness.

Modes (CollabConfig.mode), each a thin driver over the decoding core (`models/decoding.py`) and the
one decode loop (`models/decode_loop.py`):
- `standalone`: the edge alone over its model's full depth; a token leaves at the first exit head the
  policy is sure of, else at the model's own head (the same driver as a standalone task).
- `collaborative`: the edge runs layers [0, k) with exits; tokens an exit head is sure of are emitted
  at the edge, the others are asked of the cloud, which holds layers [k, L) and the session's KV
  cache, kept current from the layer-k states the edge streams in the background (a sink at layer
  k). Cloud silent past the deadline: the rest of the answer is finished with the split layer's
  head and the record says so.
- `cloud_only`: the cloud generates the whole answer from the prompt.
- `naive_split`: the edge runs [0, k); every step sends the whole context's fp32 layer-k states to a
  stateless cloud worker.
- `speculative`: the edge drafts gamma tokens (with its whole model, or with [0, k) and its exits),
  streaming the layer-k rows; the cloud verifies them with [k, L) in one forward and returns the
  accepted prefix and its correction (`edge_node/collab/speculative.py`); greedy output equals `cloud_only`.
Every mode returns the same `CollabGeneration` with one `DecodedToken` per token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from edge_node.collab.agreement_budget import AgreementBudget
from edge_node.collab.config import CollabConfig, drafting_split, drafts_with_whole_model
from edge_node.collab.link import (
    CloudSession,
    CloudUnavailableError,
    CollabClient,
    LinkCounters,
    LinkFaults,
    session_traffic,
    upload_rows,
)
from edge_node.collab.speculative import SpeculativeStepper
from edge_node.collab.split_choice import SplitChooser
from models.decode_loop import Decoded, DecodedToken, LocalStepper, TokenDecision, decode
from models.decoding import LayerStack, PassResult
from models.exits.policy import ExitPolicy
from models.loaded import LoadedModel

logger = logging.getLogger(__name__)

_NEVER_EXIT = 1.01  # exit rule thresholds above 1 disable the exit (a top probability can round to 1.0)


@dataclass(frozen=True, slots=True)
class CollabGeneration:
    mode: str
    prompt_tokens: int
    token_ids: tuple[int, ...]
    tokens: tuple[DecodedToken, ...]
    ttft_s: float
    total_s: float
    bytes_up: int  # whole answer, session open and close included
    bytes_down: int
    cloud_requests: int  # round trips: tokens asked (collaborative), verifications (speculative), every token (naive_split, cloud_only)
    fallback: bool  # the cloud fell silent (or was unreachable) and the edge finished the answer
    fallback_position: int  # position of the first token decided locally after that, or -1
    worker_id: str = ""
    reopens: int = 0
    resends: int = 0
    chunks: int = 0
    drafted: int = 0  # speculative: draft tokens sent for verification
    accepted_drafts: int = 0  # speculative: of those, accepted by the cloud
    gammas: tuple[int, ...] = ()  # speculative: drafts per verification round
    drafts_ahead: int = 0  # speculative: drafts made while a verification was in flight (kept or rolled back)
    draft_split: int = 0  # speculative: the layer the edge drafted at (its session's split)


def exit_policy_for(model: LoadedModel, config: CollabConfig) -> ExitPolicy:
    """The configured operating point: the model's calibrated policy, or one top-probability threshold."""
    layers = tuple(layer for layer in config.exit_layers if layer <= config.split_layer)
    if config.threshold is None:
        assert model.exit_policy is not None, f"{model.model_id} has no calibrated exit policy; set a threshold"
        rules = tuple(rule for rule in model.exit_policy.rules if rule.exit_layer in layers)
        if config.mode == "speculative":  # drafting at a deeper split: the draft heads' rules on the way there
            rules += tuple(rule for rule in model.exit_policy.draft_rules if rule.exit_layer <= config.split_layer)
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
    on_token: Callable[[DecodedToken], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    budget: AgreementBudget | None = None,
    splits: SplitChooser | None = None,
) -> CollabGeneration:
    """Generate greedily in `config.mode`. Modes other than standalone need `client`.

    Never raises for cloud trouble: an unreachable or silent cloud ends in a local finish, recorded as
    a fallback. `on_token` is called after every token (progress, tests). `budget` (collaborative mode)
    moves the exit thresholds to hold its agreement target and learns from this answer's tokens. `splits`
    (speculative mode) chooses the drafting split and learns from this answer's rounds.
    """
    assert prompt_ids, "prompt must not be empty"
    assert max_new_tokens >= 1, "max_new_tokens must be >= 1"
    assert config.mode == "standalone" or client is not None, f"mode {config.mode} needs a CollabClient"
    run = _Run(model, prompt_ids, max_new_tokens, config, client, stop_at_eos, faults or LinkFaults(), on_token, clock,
               budget, splits)
    match config.mode:
        case "cloud_only":
            return run.cloud_only()
        case "naive_split":
            return run.naive_split()
        case "collaborative":
            return run.collaborative()
        case "speculative":
            return run.speculative()
        case _:
            return run.standalone()


class _Run:
    """State of one answer; each mode is a method, each edge-side mode a stepper for the decode loop."""

    def __init__(self, model: LoadedModel, prompt_ids: list[int], max_new_tokens: int, config: CollabConfig,
                 client: CollabClient | None, stop_at_eos: bool, faults: LinkFaults,
                 on_token: Callable[[DecodedToken], None] | None, clock: Callable[[], float],
                 budget: AgreementBudget | None = None, splits: SplitChooser | None = None) -> None:
        self.model, self.prompt_ids, self.max_new_tokens = model, prompt_ids, max_new_tokens
        self.config, self.client, self.stop_at_eos, self.faults = config, client, stop_at_eos, faults
        self.on_token, self.clock, self.budget, self.splits = on_token, clock, budget, splits
        self.counters = LinkCounters()
        self.start = clock()
        self.cloud_requests = 0
        self.fallback_position = -1
        self.worker_id = ""  # the last worker that held this answer's session

    def standalone(self) -> CollabGeneration:
        policy = exit_policy_for(self.model, self.config)
        stack = LayerStack(self.model, 0, self.model.num_layers, exit_policy=policy, clock=self.clock)
        return self._result(self._decode(LocalStepper(stack)))

    def collaborative(self) -> CollabGeneration:
        session = self._open_session()
        if session is None:  # no cloud at all: the whole answer standalone
            return replace(_as_fallback(self._standalone_run().standalone()), mode=self.config.mode)
        stepper = _CollaborativeStepper(self, session)
        decoded = self._decode(stepper)
        if stepper.session is not None:
            self._absorb(stepper.session, notify=self.config.session_close)
        return self._result(decoded)

    def speculative(self) -> CollabGeneration:
        heads = self.model.exit_heads.exit_layers if self.model.exit_heads is not None else ()
        split = (self.splits.choose() if self.splits is not None
                 else drafting_split(self.config, self.model.num_layers, heads))
        if split != self.config.split_layer:
            self.config = replace(self.config, split_layer=split)
        session = self._open_session()
        if session is None:  # no cloud at all: the whole answer standalone
            return replace(_as_fallback(self._standalone_run().standalone()), mode=self.config.mode)
        whole_model = drafts_with_whole_model(self.config, self.model.num_layers)  # no exits needed then
        stepper = SpeculativeStepper(self, session, None if whole_model else exit_policy_for(self.model, self.config))
        try:
            decoded = self._decode(stepper)
        finally:
            stepper.close()
        if stepper.session is not None:
            self._absorb(stepper.session, notify=self.config.session_close)
        if self.splits is not None:
            self.splits.observe(stepper.figures)
        return replace(self._result(decoded), drafted=stepper.drafted, accepted_drafts=stepper.accepted,
                       gammas=tuple(stepper.gammas), drafts_ahead=stepper.drafts_ahead, draft_split=split)

    def naive_split(self) -> CollabGeneration:
        return self._result(self._decode(_NaiveSplitStepper(self)))

    def cloud_only(self) -> CollabGeneration:
        assert self.client is not None
        try:
            reply = self.client.generate_cloud_only(self.model.model_id, self.prompt_ids, self.max_new_tokens,
                                                    timeout_s=self.config.cloud_deadline_s * self.max_new_tokens,
                                                    counters=self.counters, stop_at_eos=self.stop_at_eos)
        except CloudUnavailableError as error:
            logger.warning("cloud-only generation failed (%s): answering standalone", error)
            return replace(_as_fallback(self._standalone_run().standalone()), mode=self.config.mode)
        elapsed_s = self.clock() - self.start
        count = len(reply.token_ids)
        decode_s = (reply.total_ms - reply.first_token_ms) / 1e3
        first_s = max(0.0, elapsed_s - decode_s)  # network + prompt + first token, as the edge sees it
        per_token_s = decode_s / max(1, count - 1)
        self.cloud_requests = count
        tokens = []
        for index, token in enumerate(reply.token_ids):  # the cloud ran the loop; this only records its answer
            record = DecodedToken(len(self.prompt_ids) + index, token, "cloud", self.model.num_layers,
                                  (first_s if index == 0 else per_token_s) * 1e3,
                                  self.counters.bytes_up if index == 0 else 0,
                                  self.counters.bytes_down if index == count - 1 else 0)
            tokens.append(record)
            if self.on_token:
                self.on_token(record)
        return self._result(Decoded(len(self.prompt_ids), tuple(tokens), first_s, self.clock() - self.start))

    # ---- shared ----------------------------------------------------------------------------------

    def _decode(self, stepper: LocalStepper | _CollaborativeStepper | _NaiveSplitStepper | SpeculativeStepper) -> Decoded:
        eos = self.model.eos_token_id if self.stop_at_eos else None
        return decode(stepper, [self.prompt_ids], self.max_new_tokens, eos_token_id=eos, on_token=self.on_token,
                      clock=self.clock)[0]

    def _standalone_run(self) -> _Run:
        self.fallback_position = len(self.prompt_ids)
        return _Run(self.model, self.prompt_ids, self.max_new_tokens, replace(self.config, mode="standalone"), None,
                    self.stop_at_eos, self.faults, self.on_token, self.clock)

    def _open_session(self) -> CloudSession | None:
        assert self.client is not None
        try:
            session = self.client.open_session(
                self.model.model_id, self.config.split_layer, self.model.hidden_size,
                timeout_s=self.config.open_timeout_s, chunk_positions=self.config.upload_chunk_positions,
                faults=self.faults, state_dtype=self.config.wire_dtype(), min_positions=self.config.upload_min_positions,
            )
        except CloudUnavailableError as error:
            logger.warning("no cloud session (%s): answering standalone", error)
            return None
        self.worker_id = session.worker_id
        return session

    def _absorb(self, session: CloudSession, notify: bool) -> None:
        """Close the session and fold its byte counts into the answer's."""
        session.close(notify=notify)
        self.worker_id = session.worker_id
        for name in ("bytes_up", "bytes_down", "chunks", "resends", "reopens"):
            setattr(self.counters, name, getattr(self.counters, name) + getattr(session.counters, name))

    def _local_token(self, stack: LayerStack, result: PassResult) -> int:
        """The edge's own guess at the split layer (its exit head there, or the final norm + LM head)."""
        assert result.hidden_states is not None, "a pass without an exit reaches the split layer"
        return int(stack.logits(result.hidden_states[:, -1:])[0, -1].argmax())

    def _result(self, decoded: Decoded) -> CollabGeneration:
        return CollabGeneration(
            mode=self.config.mode, prompt_tokens=decoded.prompt_tokens, token_ids=decoded.token_ids,
            tokens=decoded.tokens, ttft_s=decoded.ttft_s, total_s=self.clock() - self.start,
            bytes_up=self.counters.bytes_up, bytes_down=self.counters.bytes_down,
            cloud_requests=self.cloud_requests, fallback=self.fallback_position >= 0,
            fallback_position=self.fallback_position, worker_id=self.worker_id, reopens=self.counters.reopens,
            resends=self.counters.resends, chunks=self.counters.chunks,
        )


class _CollaborativeStepper:
    """Layers [0, k) with exits and a sink at k feeding the session; unsure tokens are asked of the cloud."""

    def __init__(self, run: _Run, session: CloudSession) -> None:
        self.run = run
        self.session: CloudSession | None = session
        self.policy = exit_policy_for(run.model, run.config)
        self.stack = LayerStack(run.model, 0, run.config.split_layer, exit_policy=self.policy,
                                sinks={run.config.split_layer: self._upload}, clock=run.clock)
        self.first = True

    def step(self, feed: list[list[int]]) -> list[list[TokenDecision]]:
        session, run = self.session, self.run
        up_before, down_before = session_traffic(session)
        if run.budget is not None:
            self.stack.exit_policy = run.budget.policy(self.policy)
        # The prompt pass completes every layer so its upload starts before the first cloud request.
        result = self.stack.run_tokens(feed, complete=self.first)
        self.first = False
        if result.exit is not None:
            token, by, layer, known_at = result.exit.token_id, "exit", result.exit.exit_layer, result.exit.decided_at
        elif session is None:
            token, by, layer, known_at = run._local_token(self.stack, result), "fallback", self.stack.end, run.clock()
        else:
            run.cloud_requests += 1
            answer = session.ask(self.stack.length - 1, run.config.cloud_deadline_s, run.config.max_reopens)
            if answer is not None:
                token, by, layer, known_at = answer.token_id, "cloud", run.model.num_layers, run.clock()
            else:
                run.fallback_position = self.stack.length
                logger.warning("session %s: cloud silent; finishing locally from position %d", session.session_id,
                               self.stack.length)
                token, by, layer, known_at = run._local_token(self.stack, result), "fallback", self.stack.end, run.clock()
        if run.budget is not None and by != "fallback":  # a fallback token has no calibrated score
            run.budget.record(result.exit.score if result.exit is not None else None)
        up_after, down_after = session_traffic(session)
        if by == "fallback" and self.session is not None:
            run._absorb(self.session, notify=False)
            self.session = None
            self.stack.sinks.clear()  # nobody to upload to any more
        return [[TokenDecision(token, by, layer, known_at, up_after - up_before, down_after - down_before)]]  # type: ignore[arg-type]

    def _upload(self, first_position: int, hidden_states: torch.Tensor) -> None:
        upload_rows(self.session, first_position, hidden_states)


class _NaiveSplitStepper:
    """Layers [0, k) complete every pass; each token sends the whole context's fp32 layer-k states."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.rows: list[np.ndarray] = []
        self.stack = LayerStack(run.model, 0, run.config.split_layer, clock=run.clock)
        self.cloud_alive = True

    def step(self, feed: list[list[int]]) -> list[list[TokenDecision]]:
        run = self.run
        assert run.client is not None
        up_before, down_before = run.counters.bytes_up, run.counters.bytes_down
        result = self.stack.run_tokens(feed)
        assert result.hidden_states is not None
        self.rows.append(result.hidden_states[0].float().numpy())
        decision = None
        if self.cloud_alive:
            run.cloud_requests += 1
            try:
                answer = run.client.naive_step(run.model.model_id, run.config.split_layer, np.concatenate(self.rows),
                                               timeout_s=run.config.cloud_deadline_s, counters=run.counters)
                decision = (answer.token_id, "cloud", run.model.num_layers)
            except CloudUnavailableError as error:
                logger.warning("naive split: cloud silent (%s); finishing locally", error)
                self.cloud_alive = False
                run.fallback_position = self.stack.length
        if decision is None:
            decision = (run._local_token(self.stack, result), "fallback", self.stack.end)
        token, by, layer = decision
        return [[TokenDecision(token, by, layer, run.clock(), run.counters.bytes_up - up_before,  # type: ignore[arg-type]
                               run.counters.bytes_down - down_before)]]


def _as_fallback(generation: CollabGeneration) -> CollabGeneration:
    return replace(generation, fallback=True, fallback_position=generation.prompt_tokens)
