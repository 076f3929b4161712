"""Speculative decoding on the edge: the edge drafts gamma tokens, the cloud verifies them with [k, L).

One round (one `step` of the decode loop): feed the last decided token, then each draft in turn,
through the edge's stack; every fed position's layer-k row goes to the session through a sink at k.
Two drafters (`CollabConfig.speculative_draft`):
- "model" (default): the stack is the edge's whole model [0, L) and its final head drafts. Its drafts
  are the full model's own tokens (the verifier disagrees only where rounding moves a near-tie), so
  rounds run to gamma and a verification is rarely wasted; the layers past k cost the edge less than the
  rejected drafts and round trips they save (docs/collaboration.md, "Drafting with the whole model").
  Its first token is the cloud's, asked on the prompt's layer-k rows while the deeper layers run.
- "exits": the stack is [0, k) with the exit heads; a sure exit head drafts early (its deeper rows
  catch up in the next pass, deferred completion), else the split layer's head drafts, and
  (`draft_stop_unsure`) that unsure draft ends the round: drafting on top of it would mostly be
  wasted edge work. For edges that cannot afford the layers past k.
Gamma caps the round's drafts; `flush()` pushes the last deferred rows before the `DraftVerify`. The
cloud runs [k, L) over the rows it lacks in one forward and answers with the accepted prefix and its
own correction; edge stack and session rows roll back past the last position fed with an accepted
token. With temperature > 0 the drafts are sampled from the drafting head (no exits) and the cloud
applies the speculative-sampling rule.

The cloud silent past the deadline: the round's drafts stand as `fallback` tokens (they are the
edge's own choices), and the rest of the answer is drafted the same way with nobody to verify.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch

from broker.messages.inference import DraftVerdict
from edge_node.collab.config import drafts_with_whole_model
from edge_node.collab.gamma import GammaTracker
from edge_node.collab.link import CloudSession, DraftSampling, session_traffic, upload_rows
from edge_node.collab.split_choice import AnswerFigures
from models.decode_loop import TokenDecision
from models.decoding import LayerStack, PassResult
from models.exits.policy import ExitPolicy
from models.speculative import nucleus_probabilities, support_of

if TYPE_CHECKING:
    from edge_node.collab.generation import _Run

logger = logging.getLogger(__name__)

_CHECKPOINT_LAYERS = 4  # a pass drafted ahead checks for a rejecting verdict every this many layers
# the whole model's prompt flush checks for the cloud's first token every this many layers past k (a boundary
# costs a one-token pass nothing measurable: 17-18 ms on q4 with 0 to 9 of them, one thread)
_FLUSH_CHECKPOINT_LAYERS = 2


@dataclass(frozen=True, slots=True)
class _Draft:
    token: int
    distribution: torch.Tensor  # the draft distribution when sampling, else empty
    sure: bool  # an exit head was sure of it
    probability: float = 1.0  # an unsure draft: the split layer head's top probability


def _round_ends(drafts: list[_Draft], continue_min: float) -> bool:
    """After these drafts, verify now? At an unsure draft, unless every unsure draft of the round was
    likely enough together (product of their head probabilities >= continue_min)."""
    last = drafts[-1]
    if last.sure:
        return False
    together = 1.0
    for draft in drafts:
        together *= 1.0 if draft.sure else draft.probability
    return together < continue_min


class SpeculativeStepper:
    """Drafts with [0, k) (+ exits), verifies with the session's worker, rolls back on rejection.

    While a verification is in flight the edge drafts on (`draft_ahead`), assuming every draft stands:
    those rows stay on the edge (`CloudSession.hold`) until the verdict; if it accepts everything the
    drafts ahead open the next round at once, else they are rolled back with the rejected ones.
    """

    def __init__(self, run: _Run, session: CloudSession, policy: ExitPolicy | None) -> None:
        self.run = run
        self.session: CloudSession | None = session
        config = run.config
        self.sampling = config.temperature > 0.0
        # The whole model drafts (its final head; the rows at k still stream) unless told to draft with the
        # exits, or the model ends at the split. Its drafts are the full model's own: never unsure, no exits.
        self.whole_model = drafts_with_whole_model(config, run.model.num_layers)
        self.stop_unsure = config.draft_stop_unsure and not self.sampling and not self.whole_model
        self.continue_min = config.draft_continue_probability
        # Greedy whole-model drafts come from exact rows; int8 rows may blur their near-ties at the cloud
        self.tie_tolerance = (config.int8_tie_tolerance if self.whole_model and not self.sampling
                              and config.wire_dtype() == "int8" else 0.0)
        end = run.model.num_layers if self.whole_model else config.split_layer
        if self.whole_model:  # a pass can't be abandoned once it fed the sink at k; the prompt's flush can stop
            checkpoints = tuple(range(config.split_layer + _FLUSH_CHECKPOINT_LAYERS, end, _FLUSH_CHECKPOINT_LAYERS))
        else:
            checkpoints = tuple(range(_CHECKPOINT_LAYERS, end, _CHECKPOINT_LAYERS))
        self.stack = LayerStack(run.model, 0, end, exit_policy=None if self.sampling or self.whole_model else policy,
                                sinks={config.split_layer: self._upload}, clock=run.clock, checkpoints=checkpoints)
        # Ending rounds at unsure drafts, gamma bounds runs of sure (exit) drafts: the calibrated exits'
        # own agreement (>= 0.9) is the prior of their acceptance, not a generic 0.7 that caps gamma at 1.
        # The whole model's drafts are the verifier's own tokens but for rounding: 0.9 there too.
        self.tracker = GammaTracker(config.gamma_max, gamma_initial=config.gamma or config.gamma_initial,
                                    prior_acceptance=0.9 if self.stop_unsure or self.whole_model else 0.7)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.verifier = ThreadPoolExecutor(1, thread_name_prefix="speculative-verify") if config.draft_ahead else None
        self.ahead: list[_Draft] = []  # drafted past the last verification, already fed (all but the last)
        self.emitted = 0
        self.first = True
        self.rounds = 0
        self.drafted = 0
        self.accepted = 0
        self.gammas: list[int] = []  # drafts of every verified round
        self.drafts_ahead = 0  # drafts made while a verification was in flight (kept or rolled back)
        self._passes = 0
        self.figures = AnswerFigures(config.split_layer)  # the split chooser's input: every round after the first

    def close(self) -> None:
        if self.verifier is not None:
            self.verifier.shutdown(wait=True)

    def step(self, feed: list[list[int]]) -> list[list[TokenDecision]]:
        if self.first and self.whole_model and not self.sampling and self.session is not None:
            return self._first_from_cloud(feed[0])
        run, config = self.run, self.run.config
        # Only the last decided token is new: accepted drafts are in the cache already; after drafting
        # ahead the last decided token (the last draft) is in it too.
        tokens = feed[0] if self.first else ([] if self.ahead else feed[0][-1:])
        if self.ahead:  # the last decided token was fed while drafting ahead, then one pass per draft but the last
            first_position = self.stack.length - len(self.ahead)
        else:  # its row drafts the round's first token
            first_position = self.stack.length + len(tokens) - 1
        gamma = max(1, min(config.gamma or self.tracker.gamma, run.max_new_tokens - self.emitted))
        session = self.session
        up_before, down_before = session_traffic(session)
        drafting_started = run.clock()
        drafts = self._draft(tokens, gamma)
        drafted_at = run.clock()
        verdict, verdict_at = None, drafted_at
        if session is not None:
            run.cloud_requests += 1
            verdict, verdict_at = self._verify(session, first_position, drafts, gamma)
            if verdict is None:
                self._fall_back(first_position)
        known_at = run.clock()
        up_after, down_after = session_traffic(session)
        if verdict is None:
            decided = [(draft.token, "fallback", self.stack.end) for draft in drafts]
        else:
            accepted = verdict.accepted
            decided = [(draft.token, "draft_accepted", run.model.num_layers) for draft in drafts[:accepted]]
            if verdict.token_id >= 0:
                decided.append((verdict.token_id, "draft_corrected", run.model.num_layers))
            keep = first_position + accepted + 1  # positions fed with accepted tokens stay
            if self.stack.length > keep and verdict.token_id >= 0:
                self.ahead = []  # drafted on top of a rejected draft
                self.stack.rollback(keep)
                assert session is not None
                session.rollback(keep)
            if session is not None:
                session.release()
            drafting_ms, wait_ms = (drafted_at - drafting_started) * 1e3, (verdict_at - drafted_at) * 1e3
            self._count(drafts, accepted, verdict.compute_ms, drafting_ms, wait_ms)
            if self.rounds > 1:  # the first round's drafting includes the prompt
                self.figures.add(len(decided), self._passes, drafting_ms, wait_ms - verdict.compute_ms,
                                verdict.compute_ms)
        self.emitted += len(decided)
        return [[TokenDecision(token, by, layer, known_at,  # type: ignore[arg-type]
                               (up_after - up_before) if index == 0 else 0,
                               (down_after - down_before) if index == 0 else 0)
                 for index, (token, by, layer) in enumerate(decided)]]

    def _first_from_cloud(self, prompt: list[int]) -> list[list[TokenDecision]]:
        """The whole model's first token is the cloud's: the prompt runs to layer k, its rows go up with a token
        request, and the prompt's deeper layers (the drafter's, not the cloud's) run while the cloud answers.
        The first token then comes a round trip after [0, k), as a collaborative answer's does, not after
        [0, L) and a round of drafts. Once the answer is in the flush stops at the next checkpoint; the rows
        still on their way to L ride with the first drafting pass."""
        run, config = self.run, self.run.config
        session = self.session
        assert session is not None
        up_before, down_before = session_traffic(session)
        self.stack.run_tokens([prompt], pause_after=config.split_layer)  # the sink at k fed the session
        self.first = False
        run.cloud_requests += 1
        position = self.stack.length - 1
        ask = partial(session.ask, position, config.cloud_deadline_s, config.max_reopens)
        pending = self.verifier.submit(ask) if self.verifier is not None else None  # asked while flushing
        last_row = self.stack.flush(stop=pending.done if pending is not None else None)
        answer = pending.result() if pending is not None else ask()
        up_after, down_after = session_traffic(session)
        if answer is None:  # the cloud fell silent: the whole model's own token, then local drafting
            last_row = self.stack.flush() if last_row is None else last_row  # a stopped flush left rows deeper
            assert last_row is not None, "the prompt's rows arrive at the last layer when flushed"
            self._fall_back(position)
            token, by = int(self.stack.logits(last_row[:, -1:])[0, -1].argmax()), "fallback"
        else:
            token, by = answer.token_id, "cloud"
        self.emitted += 1
        return [[TokenDecision(token, by, run.model.num_layers, run.clock(), up_after - up_before,  # type: ignore[arg-type]
                               down_after - down_before)]]

    def _verify(self, session: CloudSession, first_position: int, drafts: list[_Draft],
                gamma: int) -> tuple[DraftVerdict | None, float]:
        """Send the drafts for verification; draft ahead until the verdict is back. (verdict or None, when it came)."""
        config = self.run.config
        ids = tuple(draft.token for draft in drafts)

        def verify() -> tuple[DraftVerdict | None, float]:
            verdict = session.verify(first_position, ids, config.cloud_deadline_s, config.max_reopens,
                                     self._sampling(drafts), self.tie_tolerance)
            return verdict, self.run.clock()

        if self.verifier is None:
            return verify()
        session.hold(first_position + len(drafts))
        pending = self.verifier.submit(verify)
        self._draft_ahead(drafts[-1], pending, gamma, self.run.max_new_tokens - self.emitted - len(drafts), len(drafts))
        return pending.result()

    def _draft_ahead(self, last: _Draft, pending: Future, gamma: int, budget: int, drafts: int) -> None:
        """Feed the last draft and draft on while the verification is in flight (sure drafts only, up to gamma).

        A verdict rejecting one of the round's `drafts` abandons the pass under way at its next checkpoint
        (every `_CHECKPOINT_LAYERS` layers): drafting ahead then costs at most that much of the wait.
        """
        eos = self.run.model.eos_token_id if self.run.stop_at_eos else None
        feed = last.token

        def rejected() -> bool:
            if not pending.done():
                return False
            verdict, _ = pending.result()
            return verdict is not None and verdict.accepted < drafts

        while not pending.done() and feed != eos and len(self.ahead) < min(gamma, budget):
            if self.ahead and self.stop_unsure and _round_ends(self.ahead, self.continue_min):
                break
            draft = self._draft_one(feed, stop=rejected)
            if draft is None:
                break
            self.ahead.append(draft)
            self.drafts_ahead += 1
            feed = draft.token
        self.stack.flush()

    def _count(self, drafts: list[_Draft], accepted: int, cloud_ms: float, edge_ms: float, wait_ms: float) -> None:
        logger.debug("round %d: drafts %s accepted %d gamma %d edge %.0f ms wait %.0f ms", self.rounds,
                     "".join("s" if d.sure else "u" for d in drafts), accepted, self.tracker.gamma, edge_ms, wait_ms)
        self.rounds += 1
        self.gammas.append(len(drafts))
        self.drafted += len(drafts)
        self.accepted += accepted
        # The figures decide drafting ahead too; gamma follows them only when adaptive (config.gamma == 0).
        ended_unsure = self.stop_unsure and not drafts[-1].sure  # that draft ends the round whatever gamma is
        self.tracker.observe(len(drafts), accepted, edge_ms, wait_ms, cloud_ms, counted=len(drafts) - int(ended_unsure),
                             passes=self._passes)

    def _draft(self, tokens: list[int], gamma: int) -> list[_Draft]:
        """Feed `tokens`, then each draft: up to `gamma` drafts (the ones drafted ahead first)."""
        eos = self.run.model.eos_token_id if self.run.stop_at_eos else None
        drafts, self.ahead = self.ahead[:gamma], self.ahead[gamma:]
        self._passes = 0  # edge passes of this round's drafting (drafts ahead were made during the last wait)
        if self.ahead:  # more drafted ahead than this round takes: their rows go back
            self.stack.rollback(self.stack.length - len(self.ahead))
            if self.session is not None:
                self.session.rollback(min(self.session.known, self.stack.length))
            self.ahead = []
        while len(drafts) < gamma:
            last = drafts[-1] if drafts else None
            if last is not None and (last.token == eos or (self.stop_unsure and _round_ends(drafts, self.continue_min))):
                break  # an unsure draft is likely rejected: verify before drafting on top of it
            draft = self._draft_one(tokens if last is None else [last.token])
            assert draft is not None, "a pass without `stop` is never abandoned"
            drafts.append(draft)
            self._passes += 1
        self.stack.flush()  # deferred rows on to layer k: the cloud needs every drafting row
        return drafts

    def _draft_one(self, feed: list[int] | int, stop: Callable[[], bool] | None = None) -> _Draft | None:
        """One pass and the draft it yields; None if `stop` abandoned the pass."""
        # The prompt pass completes every layer so its upload starts at once.
        result = self.stack.run_tokens([feed if isinstance(feed, list) else [feed]],
                                       complete=self.first or self.sampling, stop=stop)
        if result.abandoned:
            return None
        self.first = False
        token, distribution, probability = self._draft_token(result)
        return _Draft(token, distribution, result.exit is not None or self.whole_model, probability)

    def _draft_token(self, result: PassResult) -> tuple[int, torch.Tensor, float]:
        """The draft, its distribution when sampling, and the split layer head's top probability (1.0 for a sure
        exit or the whole model's greedy draft)."""
        if result.exit is not None:
            return result.exit.token_id, torch.empty(0), 1.0
        if not self.sampling and result.head_token is not None:  # the split layer's exit check already ran its head
            return result.head_token, torch.empty(0), float(result.head_probability or 0.0)
        assert result.hidden_states is not None, "a pass without an exit reaches the split layer"
        logits = self.stack.logits(result.hidden_states[:, -1:])[0, -1]  # (V,)
        if self.whole_model and not self.sampling:  # the model's own greedy token: no confidence to weigh
            return int(logits.argmax()), torch.empty(0), 1.0
        if not self.sampling:  # a split layer without an exit rule: its head drafts, its confidence decides the round
            top = torch.softmax(logits, dim=-1).max()
            return int(logits.argmax()), torch.empty(0), float(top)
        config = self.run.config
        distribution = nucleus_probabilities(logits, config.temperature, config.top_p)  # (V,)
        if int((distribution > 0).sum()) > config.draft_support_max:  # the wire carries at most this many
            top = distribution.topk(config.draft_support_max)
            distribution = torch.zeros_like(distribution).scatter(0, top.indices, top.values)
            distribution /= distribution.sum()
        token = int(torch.multinomial(distribution, 1, generator=self.generator))
        return token, distribution, float(distribution[token])

    def _sampling(self, drafts: list[_Draft]) -> DraftSampling | None:
        if not self.sampling:
            return None
        config = self.run.config
        sizes, support, probabilities = [], [], []
        for draft in drafts:
            ids, values = support_of(draft.distribution, config.draft_support_max)
            sizes.append(len(ids))
            support += ids
            probabilities += values
        seed = int(torch.randint(0, 2**31 - 1, (), generator=self.generator))
        return DraftSampling(config.temperature, config.top_p, seed, tuple(float(d.distribution[d.token]) for d in drafts),
                             tuple(sizes), tuple(support), tuple(probabilities))

    def _fall_back(self, position: int) -> None:
        """The cloud fell silent: close the session; the drafts of this round and all later ones are the answer."""
        assert self.session is not None
        run = self.run
        run.fallback_position = position + 1
        logger.warning("session %s: cloud silent; finishing locally from position %d", self.session.session_id,
                       position + 1)
        run._absorb(self.session, notify=False)
        self.session = None
        self.stack.sinks.clear()  # nobody to upload to any more

    def _upload(self, first_position: int, hidden_states: torch.Tensor) -> None:
        upload_rows(self.session, first_position, hidden_states)
