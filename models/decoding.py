"""The decoding core: a contiguous range of decoder layers [start, end) stepped one pass at a time.

Every mode is a thin driver over `LayerStack`: the standalone edge and the cloud's whole tasks run
[0, L) (with or without exit heads), a collaborating edge runs [0, k) with a sink at layer k, the
cloud's session context runs [k, L) from uploaded states, and a pipeline stage runs any [a, b).

The range is cut into segments at the exit layers and the sink layers; each segment is a
`DecoderSlice` with its own KV cache. A pass feeds new positions through the segments in order:
- at an exit layer the exit head's features go to the policy; a sure head decides the token there;
- after an exit, the deeper segments are not run now: the new rows wait at the next segment's
  input and go through first, batched with the next pass's rows (deferred completion). Positions
  stay contiguous, so rotary positions and the causal mask are exact and every position gets the
  keys/values the full model computes. The lag is one token: if the next token exits too while rows
  still wait deeper, that pass runs on to the end after deciding, taking both positions at once;
- at a sink layer the states of the positions that just reached it are handed to the sink.
`rollback(length)` forgets positions >= length everywhere (rejected speculative drafts), and the
batch dimension carries several sequences (left-padded at their first pass) or several positions.
A pass given a `stop` callable checks it at every segment boundary (`checkpoints` add boundaries)
and, when it answers True, is abandoned as if never run: a speculative edge drafting ahead drops a
pass the moment a verdict says the draft it builds on was rejected, not a whole pass later.
`pause_after` stops a pass at a boundary, its rows waiting deeper like deferred ones until `flush()`,
which may itself stop at a boundary when its `stop` says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from models.exits.copying import CopyIndex
from models.exits.heads import exit_features
from models.exits.policy import ExitPolicy
from models.slices import run_ragged

if TYPE_CHECKING:
    from models.loaded import LoadedModel

logger = logging.getLogger(__name__)

# (first position, (B, n, C) states of positions [first, first + n) at the sink's layer)
StateSink = Callable[[int, torch.Tensor], None]


@dataclass(frozen=True, slots=True)
class ExitDecision:
    """A token an exit head was sure of during a pass."""

    token_id: int
    exit_layer: int
    decided_at: float  # clock reading when the head decided
    score: float = 1.0  # the exit rule's score (a calibrated probability that the token is the full model's)


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass produced: an exit (batch 1 only), and the states that reached `end`, if any."""

    exit: ExitDecision | None
    hidden_states: torch.Tensor | None  # (B, n, C) at layer `end`, positions [first_position, first_position + n)
    first_position: int
    finished_at: float  # clock reading when the pass returned
    # The exit head at `end` checked this pass without being sure: its top token and probability (the
    # edge's own guess at the split layer, already computed for the check), else None.
    head_token: int | None = None
    head_probability: float | None = None
    abandoned: bool = False  # `stop` answered True mid-pass: nothing of it is kept


def top_token(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., V) logits -> (token ids (...), their softmax probabilities (...)), in float32."""
    probabilities = torch.softmax(logits.float(), dim=-1)
    top_probability, token_ids = probabilities.max(dim=-1)
    return token_ids, top_probability


class LayerStack:
    """Layers [start, end) of `model` with their own KV caches, exits and state sinks.

    A range starting at 0 takes token ids (`run_tokens`); any range takes hidden states (`run`).
    """

    def __init__(self, model: LoadedModel, start: int, end: int, *, exit_policy: ExitPolicy | None = None,
                 sinks: Mapping[int, StateSink] | None = None, clock: Callable[[], float] = time.perf_counter,
                 transformers_layers: bool = False, checkpoints: tuple[int, ...] = ()) -> None:
        assert 0 <= start < end <= model.num_layers, f"range [{start}, {end}) outside 0..{model.num_layers}"
        self.model = model
        self.start, self.end = start, end
        self.exit_policy = exit_policy
        self.exit_layers = tuple(layer for layer in (exit_policy.exit_layers if exit_policy else ()) if start < layer <= end)
        self.sinks = dict(sinks or {})
        assert all(start < layer <= end for layer in self.sinks), f"sink layers {tuple(self.sinks)} outside ({start}, {end}]"
        inner_checkpoints = {layer for layer in checkpoints if start < layer < end}  # where `stop` is also checked
        self.boundaries = sorted({start, *self.exit_layers, *self.sinks, *inner_checkpoints, end})
        # transformers_layers: transformers' own layer modules, the yardstick the lean layers are measured against
        self.transformers_layers = transformers_layers
        self.segments = [model.decoder_slice(a, b, transformers_layers)
                         for a, b in zip(self.boundaries, self.boundaries[1:], strict=False)]
        self.clock = clock
        self._waiting: list[torch.Tensor | None] = [None] * len(self.segments)  # rows at each segment's input
        self._pad_lengths: torch.Tensor | None = None  # (B,) left padding of a batch of unequal prompts
        self.length = 0  # positions fed so far
        self._copies = CopyIndex()  # the token ids fed to a one-sequence stack, for the exit policy's copy features

    @property
    def completed(self) -> int:
        """Positions that have reached layer `end` (the rest wait in deferred segments)."""
        return self.segments[-1].length

    @property
    def pad_lengths(self) -> torch.Tensor | None:
        return self._pad_lengths

    def embed(self, token_ids: list[list[int]]) -> torch.Tensor:
        """Token ids of B rows -> (B, T, C); rows of unequal length are left-padded (first pass only)."""
        assert self.start == 0, f"layers [{self.start}, {self.end}) take hidden states, not token ids"
        longest = max(len(row) for row in token_ids)
        if any(len(row) != longest for row in token_ids):
            assert self.length == 0, "rows of unequal length can only start a sequence (left padding)"
            pad_id = self.model.eos_token_id
            self._pad_lengths = torch.tensor([longest - len(row) for row in token_ids])
            token_ids = [[pad_id] * (longest - len(row)) + list(row) for row in token_ids]
        return self.model.embedding_slice()(torch.tensor(token_ids))  # (B, T, C)

    @torch.no_grad()
    def run_tokens(self, token_ids: list[list[int]], *, complete: bool = True,
                   stop: Callable[[], bool] | None = None, pause_after: int | None = None) -> PassResult:
        """Feed token ids of B rows (a prompt, or the last generated tokens) through the range."""
        if len(token_ids) == 1:  # rollbacks keep the copy index in step with the positions
            self._copies.extend(token_ids[0])
        return self.run(self.embed(token_ids), complete=complete, stop=stop, pause_after=pause_after)

    @torch.no_grad()
    def run(self, hidden_states: torch.Tensor, *, complete: bool = True, position: int | None = None,
            stop: Callable[[], bool] | None = None, pause_after: int | None = None) -> PassResult:
        """Feed (B, T, C) states of the next T positions; `position` below `length` rolls back first.

        With an exit policy (batch 1), a sure exit head decides the token and, unless `complete`, the
        deeper segments wait for the next pass (see the module docstring). `stop` is asked at each
        segment boundary; True abandons the pass (`PassResult.abandoned`, every cache as before it).
        A pass carrying rows an earlier pass deferred, or in a range with a sink before `end`, runs through.
        `pause_after` (a boundary inside the range) stops the pass there: its rows wait deeper like deferred
        ones, for the next pass or `flush()` (a speculative edge asks the cloud meanwhile).
        """
        assert hidden_states.dim() == 3, f"hidden_states must be (B, T, C), got {tuple(hidden_states.shape)}"
        assert pause_after is None or (pause_after in self.boundaries and pause_after < self.end), \
            f"cannot pause after layer {pause_after}: not a boundary inside [{self.start}, {self.end})"
        if position is not None and position != self.length:
            assert position < self.length, f"position {position} skips ahead of {self.length} fed positions"
            self.rollback(position)
        exits_enabled = self.exit_policy is not None and bool(self.exit_layers)
        assert not exits_enabled or hidden_states.shape[0] == 1, "exit decisions need a batch of one sequence"
        length_before = self.length
        # Not once rows deferred by an earlier pass ride along, nor past a sink inside the range (fed rows stay fed).
        abandonable = stop is not None and not self._deferred_from(0) and all(layer == self.end for layer in self.sinks)
        self.length += hidden_states.shape[1]
        carry = hidden_states
        exit_decision: ExitDecision | None = None
        head_token = head_probability = None
        previous_tokens = previous_top = None
        copy_pair = self.copy_candidates if exits_enabled else None  # one lookup for every exit check of the pass
        copies = None if copy_pair is None else torch.tensor([copy_pair])  # (1, 2)
        for index, segment in enumerate(self.segments):
            if abandonable and index > 0 and stop():  # type: ignore[misc]
                self.rollback(length_before)
                return PassResult(None, None, self.completed, self.clock(), abandoned=True)
            waiting, self._waiting[index] = self._waiting[index], None
            inputs = carry if waiting is None else torch.cat([waiting, carry], dim=1)  # (B, w + t, C)
            carry = segment(inputs, pad_lengths=self._pad_lengths)  # the last rows are the newest positions
            layer = self.boundaries[index + 1]
            self._feed_sink(layer, carry, segment.length)
            if exits_enabled and exit_decision is None and layer in self.exit_layers:
                probabilities = self.exit_probabilities(layer, carry[:, -1:])  # (1, V)
                features, candidates, top = exit_features(probabilities, previous_tokens, previous_top, copies)
                score = self._sure(layer, features[0])
                if score is not None:
                    exit_decision = ExitDecision(int(candidates[0]), layer, self.clock(), score)
                elif layer == self.end:
                    head_token, head_probability = int(candidates[0]), float(top[0])
                previous_tokens, previous_top = candidates, top
            last = index + 1 == len(self.segments)
            if layer == pause_after:
                self._wait_at(index + 1, carry)
                return PassResult(exit_decision, None, self.completed, self.clock())
            if exit_decision is None or complete or last:
                continue
            if self._deferred_from(index + 1):
                complete = True  # the previous token's rows still wait deeper: finish both now, batched
                continue
            self._waiting[index + 1] = carry
            return PassResult(exit_decision, None, self.completed, self.clock())
        return PassResult(exit_decision, carry, self.completed - carry.shape[1], self.clock(), head_token, head_probability)

    @torch.no_grad()
    def flush(self, stop: Callable[[], bool] | None = None) -> torch.Tensor | None:
        """Run every deferred row on to layer `end`; returns the (B, n, C) rows that arrived there, if any.

        `stop` is asked before each segment that has rows to run; True leaves them waiting at that boundary
        for the next pass or flush (a speculative edge stops once the cloud's first token is in), and
        returns None.
        """
        arrived = None
        for index, segment in enumerate(self.segments):
            if self._waiting[index] is None:
                continue
            if stop is not None and stop():
                return None
            waiting, self._waiting[index] = self._waiting[index], None
            carry = segment(waiting, pad_lengths=self._pad_lengths)
            self._feed_sink(self.boundaries[index + 1], carry, segment.length)
            if index + 1 == len(self.segments):
                arrived = carry
            else:
                self._wait_at(index + 1, carry)
        return arrived

    def rollback(self, length: int) -> None:
        """Forget positions >= `length` in every KV cache and every deferred row (rejected drafts)."""
        assert 0 <= length <= self.length, f"cannot roll back {self.length} positions to {length}"
        for index, segment in enumerate(self.segments):
            waiting = self._waiting[index]
            if waiting is not None:  # rows for positions [segment.length, segment.length + w)
                keep = max(0, length - segment.length)
                self._waiting[index] = waiting[:, :keep] if keep else None
            if segment.length > length:
                segment.truncate(length)
        self.length = length
        self._copies.truncate(length)
        if length == 0:
            self._pad_lengths = None

    @property
    def copy_candidates(self) -> tuple[int, int] | None:
        """The exit policy's copy candidates after the last fed token (models/exits/copying.py), or None
        when the stack was not fed every token id (a range fed states, a batch)."""
        return self._copies.candidates() if len(self._copies) == self.length else None

    def reset(self) -> None:
        self.rollback(0)

    @staticmethod
    @torch.no_grad()
    def run_ragged(stacks: list[LayerStack], hidden_states: list[torch.Tensor],
                   positions: list[int]) -> list[torch.Tensor]:
        """Several sequences, each in its own stack over the same layers, fed (1, n_i, C) rows in one forward.

        Stack i first rolls back to `positions[i]`; every result equals `stacks[i].run(hidden_states[i],
        position=positions[i]).hidden_states`, but each weight is read once for all of them (see
        `run_ragged` in `models/slices.py`). For stacks without exits, sinks or deferred rows. A forward
        that fails half-way leaves every stack at its position, no half-filled KV cache behind.
        """
        first = stacks[0]
        for stack, position in zip(stacks, positions, strict=True):
            assert stack.boundaries == first.boundaries and stack.model is first.model, "stacks differ in layers"
            assert stack.exit_policy is None and not stack.sinks and not stack._deferred_from(0), \
                "a ragged forward runs plain stacks (no exits, sinks or deferred rows)"
            if position != stack.length:
                stack.rollback(position)
        carry = list(hidden_states)
        try:
            for index in range(len(first.segments)):
                carry = run_ragged([stack.segments[index] for stack in stacks], carry)
        except Exception:
            for stack in stacks:
                stack.rollback(stack.length)  # length only moves on success: this truncates what the failure wrote
            raise
        for stack, rows in zip(stacks, hidden_states, strict=True):
            stack.length += rows.shape[1]
        return carry

    @torch.no_grad()
    def exit_probabilities(self, layer: int, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, 1, C) states after `layer` layers -> (B, V): its exit head, or the final norm + LM head without one."""
        heads = self.model.exit_heads
        if heads is not None and layer in heads.exit_layers:
            return self.model.exit_probabilities(layer, hidden_states)[:, -1]
        logger.debug("no exit head at layer %d: using the final norm + LM head", layer)
        return torch.softmax(self.model.head_slice()(hidden_states)[:, -1].float(), dim=-1)

    @torch.no_grad()
    def logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, C) states at layer `end` -> (B, T, V) float32: the model's head, or the exit head at `end`."""
        if self.end == self.model.num_layers:
            return self.model.head_slice(transformers_head=self.transformers_layers)(hidden_states)
        heads = self.model.exit_heads
        if heads is not None and self.end in heads.exit_layers:
            return self.model.exit_head(self.end)(hidden_states)
        return self.model.head_slice()(hidden_states)

    def cache_bytes(self) -> int:
        return sum(segment.cache.nbytes() for segment in self.segments)

    def _wait_at(self, index: int, rows: torch.Tensor) -> None:
        """Queue (B, n, C) rows at segment `index`'s input, behind rows already waiting there (lower positions)."""
        waiting = self._waiting[index]
        self._waiting[index] = rows if waiting is None else torch.cat([waiting, rows], dim=1)

    def _deferred_from(self, index: int) -> bool:
        return any(waiting is not None for waiting in self._waiting[index:])

    def _feed_sink(self, layer: int, hidden_states: torch.Tensor, reached: int) -> None:
        sink = self.sinks.get(layer)
        if sink is not None:
            sink(reached - hidden_states.shape[1], hidden_states)

    def _sure(self, layer: int, features: torch.Tensor) -> float | None:
        """The exit rule's score when it says exit here, else None."""
        assert self.exit_policy is not None
        return self.exit_policy.exit_score(layer, tuple(float(value) for value in features.tolist()))
