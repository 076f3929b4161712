"""Plain generation with the whole model (greedy or temperature + top-p), a thin driver of the decode loop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from models.decode_loop import LocalStepper, decode
from models.decoding import LayerStack
from models.speculative import nucleus_probabilities

if TYPE_CHECKING:
    from models.loaded import LoadedModel

logger = logging.getLogger(__name__)


def pick_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """Next token from (V,) logits: argmax if temperature == 0, else nucleus sampling."""
    assert logits.dim() == 1, f"logits must be (V,), got {tuple(logits.shape)}"
    if temperature == 0.0:
        return int(logits.argmax())
    assert generator is not None, "sampling needs a seeded torch.Generator"
    return int(torch.multinomial(nucleus_probabilities(logits, temperature, top_p), 1, generator=generator))


@torch.no_grad()
def generate(model: LoadedModel, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, generator: torch.Generator | None = None, eos_token_id: int | None = None) -> list[int]:
    """Continue `prompt_ids` for up to `max_new_tokens`, stopping after `eos_token_id` if given."""
    assert len(prompt_ids) > 0, "prompt must not be empty"
    stepper = LocalStepper(LayerStack(model, 0, model.num_layers),
                           lambda logits: [pick_token(row, temperature, top_p, generator) for row in logits])
    return list(decode(stepper, [prompt_ids], max_new_tokens, eos_token_id=eos_token_id)[0].token_ids)


@torch.no_grad()
def generate_batch(model: LoadedModel, prompts: list[list[int]], max_new_tokens: int,
                   eos_token_id: int | None = None) -> list[list[int]]:
    """Greedy continuations of several prompts in one forward per step (left-padded to the longest)."""
    stepper = LocalStepper(LayerStack(model, 0, model.num_layers))
    return [list(answer.token_ids) for answer in decode(stepper, prompts, max_new_tokens, eos_token_id=eos_token_id)]
