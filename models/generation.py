"""Token-by-token generation through the model's slices (greedy or temperature + top-p)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from models.loaded import LoadedModel

logger = logging.getLogger(__name__)


def pick_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """Next token from (V,) logits: argmax if temperature == 0, else nucleus sampling."""
    assert logits.dim() == 1, f"logits must be (V,), got {tuple(logits.shape)}"
    if temperature == 0.0:
        return int(logits.argmax())
    assert generator is not None, "sampling needs a seeded torch.Generator"
    probabilities = torch.softmax(logits / temperature, dim=-1)  # (V,)
    sorted_probs, sorted_ids = probabilities.sort(descending=True)
    keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p  # always keeps the top token
    kept = sorted_probs * keep
    choice = torch.multinomial(kept / kept.sum(), 1, generator=generator)
    return int(sorted_ids[choice])


@torch.no_grad()
def generate(model: LoadedModel, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, generator: torch.Generator | None = None, eos_token_id: int | None = None) -> list[int]:
    """Continue `prompt_ids` for up to `max_new_tokens`, stopping after `eos_token_id` if given."""
    assert len(prompt_ids) > 0, "prompt must not be empty"
    embedding, decoder, head = model.embedding_slice(), model.decoder_slice(0, model.num_layers), model.head_slice()
    input_ids = torch.tensor([prompt_ids])  # (1, T)
    new_tokens: list[int] = []
    for _ in range(max_new_tokens):
        logits = head(decoder(embedding(input_ids)))[0, -1]  # (V,)
        token = pick_token(logits, temperature, top_p, generator)
        new_tokens.append(token)
        if token == eos_token_id:
            break
        input_ids = torch.tensor([[token]])  # (1, 1)
    return new_tokens
