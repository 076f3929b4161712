"""Speculative decoding on the edge: draft gamma tokens with layers [0, k) and the exits, the cloud verifies.

One round (one `step` of the decode loop): feed the last decided token, then each draft in turn,
through the edge's `LayerStack(0, k)`; a sure exit head drafts early (its deeper rows catch up in the
next pass, deferred completion), else the split layer's head drafts, and (`draft_stop_unsure`) that
unsure draft ends the round: drafting on top of it would mostly be wasted edge work. Gamma caps
the round's drafts. Every fed position's layer-k
row goes to the session through the sink; `flush()` pushes the last deferred rows before the
`DraftVerify`. The cloud runs [k, L) over the rows it lacks in one forward and answers with the
accepted prefix and its own correction; edge stack and session rows roll back past the last
position fed with an accepted token. With temperature > 0 the drafts are sampled from the split
layer's head (no exits) and the cloud applies the speculative-sampling rule.

The cloud silent past the deadline: the round's drafts stand as `fallback` tokens (they are the
edge's own choices), and the rest of the answer is drafted the same way with nobody to verify.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from edge_node.collab.gamma import GammaTracker
from edge_node.collab.link import CloudSession, DraftSampling
from models.decode_loop import TokenDecision
from models.decoding import LayerStack, PassResult
from models.exits.policy import ExitPolicy
from models.speculative import nucleus_probabilities, support_of

if TYPE_CHECKING:
    from edge_node.collab.generation import _Run

logger = logging.getLogger(__name__)


class SpeculativeStepper:
    """Drafts with [0, k) (+ exits), verifies with the session's worker, rolls back on rejection."""

    def __init__(self, run: _Run, session: CloudSession, policy: ExitPolicy) -> None:
        self.run = run
        self.session: CloudSession | None = session
        config = run.config
        self.sampling = config.temperature > 0.0
        self.stop_unsure = config.draft_stop_unsure and not self.sampling  # sampling drafts have no exits
        self.stack = LayerStack(run.model, 0, config.split_layer, exit_policy=None if self.sampling else policy,
                                sinks={config.split_layer: self._upload}, clock=run.clock)
        self.tracker = GammaTracker(config.gamma_max, gamma_initial=config.gamma or config.gamma_initial)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.emitted = 0
        self.first = True
        self.rounds = 0
        self.drafted = 0
        self.accepted = 0
        self.gammas: list[int] = []  # drafts of every verified round

    def step(self, feed: list[list[int]]) -> list[list[TokenDecision]]:
        run, config = self.run, self.run.config
        # Only the last decided token is new: accepted drafts are in the cache already.
        tokens = feed[0] if self.first else feed[0][-1:]
        first_position = self.stack.length + len(tokens) - 1  # its row drafts the round's first token
        gamma = min(config.gamma or self.tracker.gamma, run.max_new_tokens - self.emitted)
        session = self.session
        up_before, down_before = _counts(session)
        drafting_started = run.clock()
        drafts, distributions, sure = self._draft(tokens, max(1, gamma))
        drafted_at = run.clock()
        verdict = None
        if session is not None:
            run.cloud_requests += 1
            verdict = session.verify(first_position, tuple(drafts), config.cloud_deadline_s, config.max_reopens,
                                          self._sampling(drafts, distributions))
            if verdict is None:
                self._fall_back(first_position)
        known_at = run.clock()
        up_after, down_after = _counts(session)
        if verdict is None:
            decided = [(token, "fallback", self.stack.end) for token in drafts]
        else:
            accepted = verdict.accepted
            decided = [(token, "draft_accepted", run.model.num_layers) for token in drafts[:accepted]]
            if verdict.token_id >= 0:
                decided.append((verdict.token_id, "draft_corrected", run.model.num_layers))
            keep = first_position + accepted + 1  # positions fed with accepted tokens stay
            if self.stack.length > keep:
                self.stack.rollback(keep)
                assert session is not None
                session.rollback(keep)
            self.rounds += 1
            self.gammas.append(len(drafts))
            self.drafted += len(drafts)
            self.accepted += accepted
            if not config.gamma:
                self.tracker.observe(len(drafts), accepted, (drafted_at - drafting_started) * 1e3,
                                     (known_at - drafted_at) * 1e3, verdict.compute_ms,
                                     counted=sure if self.stop_unsure else len(drafts))
        self.emitted += len(decided)
        return [[TokenDecision(token, by, layer, known_at,  # type: ignore[arg-type]
                               (up_after - up_before) if index == 0 else 0,
                               (down_after - down_before) if index == 0 else 0)
                 for index, (token, by, layer) in enumerate(decided)]]

    def _draft(self, tokens: list[int], gamma: int) -> tuple[list[int], list[torch.Tensor], int]:
        """Feed `tokens`, then each draft: up to `gamma` drafts, their distributions, and how many an exit was sure of."""
        eos = self.run.model.eos_token_id if self.run.stop_at_eos else None
        drafts: list[int] = []
        distributions: list[torch.Tensor] = []
        sure = 0
        feed = tokens
        while len(drafts) < gamma:
            # The prompt pass completes every layer so its upload starts at once.
            result = self.stack.run_tokens([feed], complete=self.first or self.sampling)
            self.first = False
            token, distribution = self._draft_token(result)
            drafts.append(token)
            distributions.append(distribution)
            sure += int(result.exit is not None)
            if token == eos or (self.stop_unsure and result.exit is None):
                break  # an unsure draft is likely rejected: verify before drafting on top of it
            feed = [token]
        self.stack.flush()  # deferred rows on to layer k: the cloud needs every drafting row
        return drafts, distributions, sure

    def _draft_token(self, result: PassResult) -> tuple[int, torch.Tensor]:
        if result.exit is not None:
            return result.exit.token_id, torch.empty(0)
        assert result.hidden_states is not None, "a pass without an exit reaches the split layer"
        logits = self.stack.logits(result.hidden_states[:, -1:])[0, -1]  # (V,)
        if not self.sampling:
            return int(logits.argmax()), torch.empty(0)
        config = self.run.config
        distribution = nucleus_probabilities(logits, config.temperature, config.top_p)  # (V,)
        if int((distribution > 0).sum()) > config.draft_support_max:  # the wire carries at most this many
            top = distribution.topk(config.draft_support_max)
            distribution = torch.zeros_like(distribution).scatter(0, top.indices, top.values)
            distribution /= distribution.sum()
        return int(torch.multinomial(distribution, 1, generator=self.generator)), distribution

    def _sampling(self, drafts: list[int], distributions: list[torch.Tensor]) -> DraftSampling | None:
        if not self.sampling:
            return None
        config = self.run.config
        sizes, support, probabilities = [], [], []
        for distribution in distributions:
            ids, values = support_of(distribution, config.draft_support_max)
            sizes.append(len(ids))
            support += ids
            probabilities += values
        return DraftSampling(config.temperature, config.top_p, int(torch.randint(0, 2**31 - 1, (), generator=self.generator)),
                             tuple(float(d[t]) for d, t in zip(distributions, drafts, strict=True)), tuple(sizes),
                             tuple(support), tuple(probabilities))

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
        if self.session is not None:
            self.session.add_rows(first_position, hidden_states[0].to(torch.float16).numpy())  # (n, C) fp16


def _counts(session: CloudSession | None) -> tuple[int, int]:
    return (session.counters.bytes_up, session.counters.bytes_down) if session else (0, 0)
