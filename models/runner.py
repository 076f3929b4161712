"""Runs one task on a loaded model: prompt → tokens (early exits where the policy allows) → parsed answer.

Shared by the edge (standalone mode, exits on) and the cloud (full model, routed tasks); both drive
the one decoding core (`models/decoding.py`) through the one loop (`models/decode_loop.py`).

Early exit on the edge emits a token as soon as an exit head is confident enough, and records the
layer it exited at. The deeper layers still run for that position, deferred to the next pass: later
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
from models.decode_loop import Decoded, LocalStepper, decode
from models.decoding import LayerStack
from models.exits.policy import ExitPolicy
from models.loaded import LoadedModel
from models.prompts import ChatPrompt, build_prompt

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class TaskOutcome:
    answer: str
    parsed: dict[str, object]
    generation: Decoded


@torch.no_grad()
def generate_with_exits(
    model: LoadedModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    policy: ExitPolicy | None = None,
    clock: Callable[[], float] = time.perf_counter,
    stop_at_eos: bool = True,
) -> Decoded:
    """Greedy generation over the whole model; with a policy, each token leaves at the first confident exit."""
    assert prompt_ids, "prompt must not be empty"
    stepper = LocalStepper(LayerStack(model, 0, model.num_layers, exit_policy=policy, clock=clock))
    eos = model.eos_token_id if stop_at_eos else None
    return decode(stepper, [prompt_ids], max_new_tokens, eos_token_id=eos, clock=clock)[0]


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
