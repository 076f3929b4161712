"""The one decode loop, its token record, and the local driver (the model alone, with or without exits).

Every mode supplies a `Stepper`: given the tokens fed since its last step (the prompt first), it
decides the next token(s) of each sequence. The loop owns everything around that: positions,
per-token latency, the end of sequence, the token budget, progress callbacks and the timings of the
whole answer. A stepper may decide several tokens in one step (accepted speculative drafts); the
loop keeps at most the budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from models.decoding import LayerStack

logger = logging.getLogger(__name__)

# Who decided a token: an edge exit head, the local model's own head at the end of its range, the
# cloud, the edge after the cloud fell silent, or a speculative draft the verifier accepted /
# replaced with its correction.
DecidedBy = Literal["exit", "head", "cloud", "fallback", "draft_accepted", "draft_corrected"]
DECIDERS: tuple[DecidedBy, ...] = ("exit", "head", "cloud", "fallback", "draft_accepted", "draft_corrected")


@dataclass(frozen=True, slots=True)
class TokenDecision:
    """A stepper's answer for one token; the loop adds the position and latency."""

    token_id: int
    decided_by: DecidedBy
    layer: int  # decoder layers the deciding state went through (exit layer, model depth, split layer)
    decided_at: float  # clock reading when the token was known
    bytes_up: int = 0  # payload bytes sent towards the cloud for this token
    bytes_down: int = 0


@dataclass(frozen=True, slots=True)
class DecodedToken:
    position: int  # index in the whole sequence (prompt included)
    token_id: int
    decided_by: DecidedBy
    layer: int  # decoder layers the deciding state went through
    latency_ms: float  # from the start of its step to the token being known
    bytes_up: int = 0
    bytes_down: int = 0

    @property
    def exit_layer(self) -> int | None:
        """The exit head's layer for a token an exit decided, else None."""
        return self.layer if self.decided_by == "exit" else None


@dataclass(frozen=True, slots=True)
class Decoded:
    """One sequence's answer."""

    prompt_tokens: int
    tokens: tuple[DecodedToken, ...]
    ttft_s: float  # prompt processing + first token
    total_s: float

    @property
    def token_ids(self) -> tuple[int, ...]:
        return tuple(token.token_id for token in self.tokens)


class Stepper(Protocol):
    def step(self, feed: list[list[int]]) -> Sequence[Sequence[TokenDecision]]:
        """Feed each sequence's new tokens; return each sequence's next token(s), at least one."""
        ...


def decode(stepper: Stepper, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
           eos_token_id: int | None = None, on_token: Callable[[DecodedToken], None] | None = None,
           clock: Callable[[], float] = time.perf_counter) -> list[Decoded]:
    """Decode every prompt (in lockstep) up to `max_new_tokens` or past `eos_token_id` if given.

    A finished sequence is still fed its last token while others go on (its decisions are dropped):
    batch rows stay aligned. `on_token` is called after every kept token.
    """
    assert prompts and all(prompts), "every prompt needs at least one token"
    assert max_new_tokens >= 1, "max_new_tokens must be >= 1"
    start = clock()
    records: list[list[DecodedToken]] = [[] for _ in prompts]
    first_at = [0.0] * len(prompts)
    finished = [False] * len(prompts)
    positions = [len(prompt) for prompt in prompts]
    feed = [list(prompt) for prompt in prompts]
    while not all(finished):
        step_start = clock()
        decisions = stepper.step(feed)
        assert len(decisions) == len(prompts), f"stepper answered {len(decisions)} of {len(prompts)} sequences"
        for row, row_decisions in enumerate(decisions):
            assert row_decisions, f"stepper decided nothing for sequence {row}"
            feed[row] = [decision.token_id for decision in row_decisions]
            for decision in row_decisions:
                if finished[row]:
                    break
                record = DecodedToken(positions[row], decision.token_id, decision.decided_by, decision.layer,
                                      (decision.decided_at - step_start) * 1e3, decision.bytes_up, decision.bytes_down)
                records[row].append(record)
                positions[row] += 1
                first_at[row] = first_at[row] or decision.decided_at
                if on_token is not None:
                    on_token(record)
                finished[row] = len(records[row]) >= max_new_tokens or decision.token_id == eos_token_id
    total_s = clock() - start
    return [Decoded(len(prompt), tuple(tokens), (first or start) - start, total_s)
            for prompt, tokens, first in zip(prompts, records, first_at, strict=True)]


TokenPicker = Callable[[torch.Tensor], list[int]]  # (B, V) logits -> one token id per row


def greedy(logits: torch.Tensor) -> list[int]:
    return [int(token) for token in logits.argmax(dim=-1)]


class LocalStepper:
    """The model alone over `stack`: an exit head's token where the policy is sure, else the head at its end.

    Used by the standalone edge (exits on), the cloud's whole tasks and plain generation (exits off).
    """

    def __init__(self, stack: LayerStack, pick: TokenPicker = greedy) -> None:
        assert stack.start == 0, "a local stepper runs from the embedding"
        self.stack = stack
        self.pick = pick

    @torch.no_grad()
    def step(self, feed: list[list[int]]) -> list[list[TokenDecision]]:
        result = self.stack.run_tokens(feed, complete=False)
        if result.exit is not None:
            return [[TokenDecision(result.exit.token_id, "exit", result.exit.exit_layer, result.exit.decided_at)]]
        assert result.hidden_states is not None, "a pass without an exit reaches the end of the range"
        logits = self.stack.logits(result.hidden_states[:, -1:])[:, -1]  # (B, V)
        tokens = self.pick(logits)
        decided_at = self.stack.clock()
        return [[TokenDecision(token, "head", self.stack.end, decided_at)] for token in tokens]
