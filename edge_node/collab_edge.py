"""The edge's part of the model for collaborative generation: layers [0, k) in segments between exit heads.

Keeping the KV cache consistent when a token exits early: the token is emitted at its exit, and the
layers it skipped run later, batched with the next token's pass through the same segment (deferred
completion). Each segment keeps the rows waiting at its input; at the next pass they go through
first, in the same forward call as the new token's rows (positions stay contiguous, so rotary
positions and the causal mask are exact). The lag is bounded to one token: if the next token exits
early too while rows still wait deeper, that pass runs on to layer k after emitting, taking both
positions in one batched call. Every position thus gets exactly the keys/values the full model
computes, the cloud gets its layer-k state at most one token late, and the work left over from an
exit is done after an emission, batched (on a CPU a forward over 2 rows costs about what 1 row
does). Nothing is approximated (no copying of states into skipped layers). `flush()` completes
everything waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.exit_heads import exit_features
from models.exit_policy import ExitPolicy
from models.loaded import LoadedModel

logger = logging.getLogger(__name__)

NO_EXIT = -1


@dataclass(frozen=True, slots=True)
class EdgeDecision:
    """What the edge knows about the next token after a pass."""

    token_id: int  # the exit's token, or NO_EXIT if no exit head was sure
    exit_layer: int  # layer of the exit that decided, or NO_EXIT
    decided_at: float  # clock reading when the token was known (or when the pass ended)
    local_token_id: int  # the edge's own best guess at the split layer (standalone / fallback answer)
    local_probability: float


LayerKSink = Callable[[int, torch.Tensor], None]  # (first position, (n, C) layer-k states)


class EdgeStack:
    """Layers [0, split) of `model` cut at the exit layers, with deferred completion after an exit."""

    def __init__(self, model: LoadedModel, split_layer: int, policy: ExitPolicy | None,
                 on_layer_k: LayerKSink | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        assert 0 < split_layer <= model.num_layers, f"split layer {split_layer} outside 1..{model.num_layers}"
        self.model = model
        self.split_layer = split_layer
        self.policy = policy
        exits = [layer for layer in (policy.exit_layers if policy else ()) if 0 < layer <= split_layer]
        self.exit_layers = tuple(exits)
        self.boundaries = sorted({0, *exits, split_layer})
        self.segments = [model.decoder_slice(a, b) for a, b in zip(self.boundaries, self.boundaries[1:], strict=False)]
        self.embedding = model.embedding_slice()
        self.on_layer_k = on_layer_k
        self.clock = clock
        self._waiting: list[torch.Tensor | None] = [None] * len(self.segments)  # rows at each segment's input
        self.length = 0  # positions embedded so far

    @property
    def completed(self) -> int:
        """Positions whose layer-k state exists (the rest wait in deferred segments)."""
        return self.segments[-1].length

    @torch.no_grad()
    def run(self, token_ids: list[int], complete: bool = False) -> EdgeDecision:
        """Feed tokens (the prompt, or the last generated token) and decide the next token if an exit is sure.

        After an exit the deeper segments wait (see module docstring) unless `complete` is set.
        """
        assert token_ids, "nothing to run"
        carry = self.embedding(torch.tensor([token_ids]))  # (1, T, C)
        self.length += len(token_ids)
        token, exit_layer, decided_at = NO_EXIT, NO_EXIT, 0.0
        local_token, local_probability = NO_EXIT, 0.0
        previous_tokens = previous_top = None
        for index, segment in enumerate(self.segments):
            waiting = self._waiting[index]
            self._waiting[index] = None
            inputs = carry if waiting is None else torch.cat([waiting, carry], dim=1)  # (1, w + t, C)
            carry = segment(inputs)  # (1, w + t, C): the last row is the newest position
            layer = self.boundaries[index + 1]
            if token == NO_EXIT and (layer in self.exit_layers or layer == self.split_layer):
                probabilities = self._head_probabilities(layer, carry[:, -1:])  # (1, V)
                features, candidates, top = exit_features(probabilities, previous_tokens, previous_top)
                if layer == self.split_layer:
                    local_token, local_probability = int(candidates[0]), float(top[0])
                if self.policy is not None and layer in self.exit_layers and self._sure(layer, features[0]):
                    token, exit_layer, decided_at = int(candidates[0]), layer, self.clock()
                previous_tokens, previous_top = candidates, top
            last = index + 1 == len(self.segments)
            if token != NO_EXIT and not complete and not last and self._deferred_below(index + 1):
                complete = True  # the previous token's rows still wait deeper: finish both now, batched
            if token != NO_EXIT and not complete and not last:
                following = self._waiting[index + 1]  # older deferred rows come first (lower positions)
                self._waiting[index + 1] = carry if following is None else torch.cat([following, carry], dim=1)
                return EdgeDecision(token, exit_layer, decided_at, local_token, local_probability)
        self._emit_layer_k(carry)
        return EdgeDecision(token, exit_layer, decided_at or self.clock(), local_token, local_probability)

    def _deferred_below(self, index: int) -> bool:
        return any(waiting is not None for waiting in self._waiting[index:])

    @torch.no_grad()
    def flush(self) -> None:
        """Run every deferred row through the remaining segments (layer-k states of every position)."""
        for index, segment in enumerate(self.segments):
            waiting = self._waiting[index]
            if waiting is None:
                continue
            self._waiting[index] = None
            carry = segment(waiting)
            if index + 1 == len(self.segments):
                self._emit_layer_k(carry)
            else:
                following = self._waiting[index + 1]
                self._waiting[index + 1] = carry if following is None else torch.cat([following, carry], dim=1)

    def _emit_layer_k(self, hidden_states: torch.Tensor) -> None:
        count = hidden_states.shape[1]
        first_position = self.completed - count
        assert first_position >= 0, f"layer-k rows {count} exceed completed positions {self.completed}"
        if self.on_layer_k is not None:
            self.on_layer_k(first_position, hidden_states[0])  # (n, C)

    def _sure(self, layer: int, features: torch.Tensor) -> bool:
        assert self.policy is not None
        return self.policy.should_exit(layer, tuple(float(value) for value in features.tolist()))

    def _head_probabilities(self, layer: int, hidden_states: torch.Tensor) -> torch.Tensor:
        """(1, 1, C) -> (1, V): the exit head at `layer`; without one, the final norm + LM head."""
        heads = self.model.exit_heads
        if heads is not None and layer in heads.exit_layers:
            return self.model.exit_probabilities(layer, hidden_states)[0]
        logger.debug("no exit head at layer %d: using the final norm + LM head", layer)
        return torch.softmax(self.model.head_slice()(hidden_states)[0].float(), dim=-1)
