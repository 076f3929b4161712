"""What an edge model's early layers say about a query before it answers: the hard-example miner's inputs.

The query text (without the chat template, which is the same for every task of a type) runs through
layers [0, e) of the edge's own model, e the model's first exit layer, once. From the exit head at e
over every query position come the confidence statistics (mean and last-position entropy and top
probability); from the layer-e states come a mean-pooled hidden state and its norm. The pooled state
is high-dimensional (576); the miner reduces it (routing/miner.py), this module only measures.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from models.decoding import LayerStack
from models.loaded import LoadedModel

logger = logging.getLogger(__name__)

MAX_QUERY_TOKENS = 256  # longer queries are measured on their first 256 tokens (QA passages)
DEFAULT_PROBE_LAYER = 10  # used when the model has no exit heads: the final norm + LM head on layer-10 states


@dataclass(frozen=True, slots=True)
class PromptStatistics:
    """Early-layer statistics of one query."""

    prompt_tokens: int  # tokens of the query text (before truncation)
    probe_layer: int  # the layer the statistics were read at
    entropy_mean: float  # nats, mean over query positions of the exit head's next-token entropy
    entropy_last: float  # nats, at the last query position
    top_prob_mean: float  # mean over positions of the exit head's top probability
    top_prob_last: float
    hidden_norm_mean: float  # mean L2 norm of the layer's states
    pooled_hidden: tuple[float, ...]  # (C,) mean over positions of the layer's states

    def scalars(self) -> tuple[float, ...]:
        """The scalar statistics in `SCALAR_NAMES` order (the prompt length as log1p)."""
        return (math.log1p(self.prompt_tokens), self.entropy_mean, self.entropy_last, self.top_prob_mean,
                self.top_prob_last, self.hidden_norm_mean)


SCALAR_NAMES = ("log_prompt_tokens", "entropy_mean", "entropy_last", "top_prob_mean", "top_prob_last",
                "hidden_norm_mean")


def probe_layer(model: LoadedModel) -> int:
    """The model's first exit layer, else DEFAULT_PROBE_LAYER (capped at the model's depth)."""
    heads = model.exit_heads
    if heads is not None and heads.exit_layers:
        return heads.exit_layers[0]
    return min(DEFAULT_PROBE_LAYER, model.num_layers)


@torch.no_grad()
def prompt_statistics(model: LoadedModel, text: str) -> PromptStatistics:
    """Run `text` through layers [0, probe_layer) of `model` and read the statistics. Asserts a non-empty text."""
    token_ids = [int(i) for i in model.tokenizer.encode(text, add_special_tokens=False)]
    assert token_ids, "a query needs at least one token"
    used = token_ids[:MAX_QUERY_TOKENS]
    layer = probe_layer(model)
    stack = LayerStack(model, 0, layer)
    hidden_states = stack.run_tokens([used]).hidden_states  # (1, T, C)
    assert hidden_states is not None and hidden_states.shape[1] == len(used), "the probe pass must reach its end"
    heads = model.exit_heads
    if heads is not None and layer in heads.exit_layers:
        probabilities = model.exit_probabilities(layer, hidden_states)[0]  # (T, V)
    else:
        probabilities = torch.softmax(model.head_slice()(hidden_states)[0].float(), dim=-1)  # (T, V)
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=-1)  # (T,)
    top = probabilities.max(dim=-1).values  # (T,)
    states = hidden_states[0].float()  # (T, C)
    return PromptStatistics(
        prompt_tokens=len(token_ids), probe_layer=layer,
        entropy_mean=float(entropy.mean()), entropy_last=float(entropy[-1]),
        top_prob_mean=float(top.mean()), top_prob_last=float(top[-1]),
        hidden_norm_mean=float(states.norm(dim=-1).mean()),
        pooled_hidden=tuple(float(x) for x in states.mean(dim=0).tolist()),
    )


@torch.no_grad()
def answer_confidence(model: LoadedModel, prompt_ids: list[int], answer_ids: list[int]) -> float | None:
    """Mean probability the model gave each token of its own answer (teacher-forced, one pass); None if empty.

    Inference-then-mining's confidence signal: for a greedy answer it is the mean top probability.
    """
    if not answer_ids:
        return None
    assert prompt_ids, "the answer needs its prompt"
    stack = LayerStack(model, 0, model.num_layers)
    hidden_states = stack.run_tokens([list(prompt_ids) + list(answer_ids)]).hidden_states  # (1, T, C)
    assert hidden_states is not None, "a pass without exits reaches the end of the range"
    predicting = hidden_states[:, len(prompt_ids) - 1: -1]  # (1, A, C): the states that predicted the answer
    probabilities = torch.softmax(stack.logits(predicting)[0].float(), dim=-1)  # (A, V)
    chosen = probabilities.gather(1, torch.tensor(answer_ids).unsqueeze(1))  # (A, 1)
    return float(chosen.mean())
