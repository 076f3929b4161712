"""The yardstick: transformers' own LlamaForCausalLM forward with its DynamicCache, greedy, no slicing.

Tests and benchmarks compare every decoding path against this; it shares no code with the core.
"""

from __future__ import annotations

import logging

import torch

from models.loaded import LoadedModel

logger = logging.getLogger(__name__)


@torch.no_grad()
def reference_greedy(loaded: LoadedModel, prompt_ids: list[int], steps: int) -> tuple[list[torch.Tensor], list[int]]:
    """Prompt, then `steps` greedy tokens (EOS does not stop it). Returns each forward's (T, V) logits and the tokens."""
    from transformers import DynamicCache

    cache = DynamicCache(config=loaded.config)
    logits = loaded.model(input_ids=torch.tensor([prompt_ids]), past_key_values=cache, use_cache=True).logits
    outputs, tokens = [logits[0]], []
    for _ in range(steps):
        token = int(outputs[-1][-1].argmax())
        tokens.append(token)
        logits = loaded.model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True).logits
        outputs.append(logits[0])
    return outputs, tokens
