"""Runs one task on a loaded model: prompt → tokens (early exits where the policy allows) → parsed answer.

Shared by the edge (standalone mode, exits on) and the cloud (full model, routed tasks).

Early exit on the edge emits a token as soon as an exit head is confident enough, and records the
layer it exited at. The deeper layers still run for that position before the next token: later
tokens attend to their keys and values, so skipping them would change every later answer (see
docs/edge-node.md). The saving is latency to emission, not compute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.answers import parse_answer
from models.exit_heads import exit_features
from models.exit_policy import ExitPolicy
from models.loaded import LoadedModel
from models.prompts import ChatPrompt, build_prompt

logger = logging.getLogger(__name__)

FULL_DEPTH = -1  # exit_layer of a token decided by the model's own head


@dataclass(frozen=True, slots=True)
class TokenTiming:
    position: int  # index in the whole sequence (prompt included)
    token_id: int
    latency_ms: float  # from the start of this decode step to the token's emission
    exit_layer: int  # layer whose exit head emitted it, or FULL_DEPTH


@dataclass(frozen=True, slots=True)
class Generation:
    prompt_tokens: int
    token_ids: tuple[int, ...]
    tokens: tuple[TokenTiming, ...]
    ttft_s: float  # prompt processing + first token
    total_s: float


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    answer: str
    parsed: dict[str, object]
    generation: Generation


@torch.no_grad()
def generate_with_exits(
    model: LoadedModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    policy: ExitPolicy | None = None,
    clock: Callable[[], float] = time.perf_counter,
    stop_at_eos: bool = True,
) -> Generation:
    """Greedy generation; with a policy, each token leaves at the first confident exit head."""
    assert prompt_ids, "prompt must not be empty"
    exit_layers = [layer for layer in (policy.exit_layers if policy else ()) if 0 < layer < model.num_layers]
    boundaries = [0, *exit_layers, model.num_layers]
    segments = [model.decoder_slice(a, b) for a, b in zip(boundaries, boundaries[1:], strict=False)]
    embedding, head = model.embedding_slice(), model.head_slice()
    start = clock()
    input_ids = torch.tensor([prompt_ids])  # (1, T)
    position = len(prompt_ids)
    timings: list[TokenTiming] = []
    first_emitted_at = None
    for _ in range(max_new_tokens):
        step_start = clock()
        hidden_states = embedding(input_ids)  # (1, t, C)
        token, exit_layer, emitted_at = -1, FULL_DEPTH, 0.0
        previous_tokens = previous_top = None
        for segment, layer in zip(segments, boundaries[1:], strict=True):
            hidden_states = segment(hidden_states)
            if token >= 0 or layer == model.num_layers or policy is None:
                continue  # already emitted: this segment only fills the KV cache
            probabilities = model.exit_probabilities(layer, hidden_states[:, -1:])[0]  # (1, V)
            features, candidates, top = exit_features(probabilities, previous_tokens, previous_top)
            if policy.should_exit(layer, tuple(features[0].tolist())):
                token, exit_layer, emitted_at = int(candidates[0]), layer, clock()
            previous_tokens, previous_top = candidates, top
        if token < 0:
            token, emitted_at = int(head(hidden_states)[0, -1].argmax()), clock()
        first_emitted_at = first_emitted_at or emitted_at
        timings.append(TokenTiming(position, token, (emitted_at - step_start) * 1e3, exit_layer))
        position += 1
        if stop_at_eos and token == model.eos_token_id:
            break
        input_ids = torch.tensor([[token]])  # (1, 1)
    return Generation(
        prompt_tokens=len(prompt_ids),
        token_ids=tuple(t.token_id for t in timings),
        tokens=tuple(timings),
        ttft_s=(first_emitted_at or start) - start,
        total_s=clock() - start,
    )


def encode_prompt(model: LoadedModel, prompt: ChatPrompt) -> list[int]:
    """Token ids of the chat (system turn, worked examples, task turn) with the generation prompt."""
    ids = model.tokenizer.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def run_task(
    model: LoadedModel,
    task_type: str,
    text: str,
    max_new_tokens: int,
    policy: ExitPolicy | None = None,
) -> TaskOutcome:
    """Build the prompt for the task type, generate, decode and parse the answer."""
    prompt = build_prompt(task_type, text)
    prompt_ids = encode_prompt(model, prompt)
    generation = generate_with_exits(model, prompt_ids, min(max_new_tokens, prompt.max_new_tokens), policy)
    answer = model.decode(list(generation.token_ids)).strip()
    parsed = parse_answer(task_type, answer, text=text)
    return TaskOutcome(answer, as_dict(parsed), generation)


def as_dict(parsed: object) -> dict[str, object]:
    """A parsed answer (a dataclass) as plain values for a message or JSON."""
    fields = getattr(parsed, "__dataclass_fields__", {})
    return {name: _plain(getattr(parsed, name)) for name in fields}


def _plain(value: object) -> object:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return as_dict(value)
    return value
