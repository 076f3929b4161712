"""A model loaded from the store: tokenizer, config, slices, exit heads and generation helpers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from models.exits.heads import ExitHeads
from models.exits.policy import ExitPolicy
from models.generation import generate
from models.manifest import Manifest
from models.quantize import module_bytes
from models.slices import DecoderSlice, EmbeddingSlice, HeadSlice, TransformersDecoderSlice
from models.tokenizer import encode_chat

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """Everything needed to run one stored model. Slices share this object's weights."""

    manifest: Manifest
    model: Any  # transformers LlamaForCausalLM (eval mode)
    tokenizer: Any  # transformers tokenizer
    exit_heads: ExitHeads | None = None
    exit_policy: ExitPolicy | None = None
    _decode_lm_head: torch.nn.Module | None = field(default=None, init=False, repr=False)

    @property
    def model_id(self) -> str:
        return self.manifest.id

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def dtype(self) -> torch.dtype:
        """dtype of hidden states flowing between slices (float32 for int8 models)."""
        return self.model.model.norm.weight.dtype

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def memory_bytes(self) -> int:
        """Bytes of weights held in memory (parameters, buffers, packed int8 and exit heads)."""
        heads = 0 if self.exit_heads is None else module_bytes(self.exit_heads)
        decode_lm_head = self._decode_lm_head
        separate_head = 0 if decode_lm_head is None or decode_lm_head is self.model.lm_head else module_bytes(decode_lm_head)
        return module_bytes(self.model) + heads + separate_head

    def embedding_slice(self) -> EmbeddingSlice:
        return EmbeddingSlice(self.model.model.embed_tokens)

    def decoder_slice(self, start: int, end: int, transformers_layers: bool = False) -> DecoderSlice:
        """Layers [start, end) with a fresh KV cache. Asserts 0 <= start < end <= num_layers.

        `transformers_layers` runs transformers' own layer modules instead of the lean ones (the yardstick).
        """
        assert 0 <= start < end <= self.num_layers, f"slice [{start}, {end}) outside 0..{self.num_layers}"
        kind = TransformersDecoderSlice if transformers_layers else DecoderSlice
        return kind(self.model.model.layers, self.model.model.rotary_emb, start, end)  # type: ignore[return-value]

    def head_slice(self, transformers_head: bool = False) -> HeadSlice:
        """Final norm + LM head; for a depth-truncated edge variant, its last exit head in front.

        `transformers_head` keeps transformers' own LM head module (the yardstick) instead of `decode_lm_head`.
        """
        adapter = None
        if self.manifest.variant == "edge":
            assert self.exit_heads is not None, f"edge variant {self.model_id} has no exit heads"
            adapter = self.exit_heads.adapter(self.num_layers)
        lm_head = self.model.lm_head if transformers_head else self.decode_lm_head()
        return HeadSlice(self.model.model.norm, lm_head, adapter)

    def exit_head(self, exit_layer: int, heads: ExitHeads | None = None) -> HeadSlice:
        """Exit head at `exit_layer` as a HeadSlice: the model's own heads, or `heads` (being trained).

        Asserts there is a head at that layer."""
        heads = heads if heads is not None else self.exit_heads
        assert heads is not None, f"model {self.model_id} has no exit heads"
        return HeadSlice(self.model.model.norm, self.decode_lm_head(), heads.adapter(exit_layer))

    def decode_lm_head(self) -> torch.nn.Module:
        """The LM head decoding and exit checks multiply by: the same weights as q8 blocks when that is exact.

        Every token and every exit check reads the whole 49,152-row head; as q8 it is 30 MB instead of
        113 MB in float32, with identical values (the head came from Q8_0 blocks). Built once; the store builds it at load.
        """
        if self._decode_lm_head is None:
            from models.lowbit.modules import LowBitLinear, lossless_q8_linear

            head = self.model.lm_head
            weight = getattr(head, "weight", None)  # dynamic-quantized heads hold no float tensor here
            cheaper = lossless_q8_linear(weight) if isinstance(weight, torch.Tensor) and not isinstance(
                head, LowBitLinear) else None
            self._decode_lm_head = head if cheaper is None else cheaper
        return self._decode_lm_head

    @torch.no_grad()
    def exit_probabilities(self, exit_layer: int, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, C) hidden states after `exit_layer` layers -> (B, T, V) next-token probabilities."""
        return torch.softmax(self.exit_head(exit_layer)(hidden_states), dim=-1)

    def encode_chat(self, user_message: str, system_message: str | None = None) -> list[int]:
        return encode_chat(self.tokenizer, user_message, system_message)

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    @torch.no_grad()
    def full_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced (B, T) ids -> (B, T, V) float32 logits through all slices."""
        hidden_states = self.decoder_slice(0, self.num_layers)(self.embedding_slice()(input_ids))
        return self.head_slice()(hidden_states)

    def generate_greedy(self, prompt_ids: list[int], max_new_tokens: int, stop_at_eos: bool = True) -> list[int]:
        """Greedy continuation of `prompt_ids` (new tokens only)."""
        return generate(self, prompt_ids, max_new_tokens, temperature=0.0, eos_token_id=self._eos(stop_at_eos))

    def generate_sampled(self, prompt_ids: list[int], max_new_tokens: int, generator: torch.Generator,
                         temperature: float = 0.8, top_p: float = 0.95, stop_at_eos: bool = True) -> list[int]:
        """Sampled continuation (temperature + nucleus) drawn from the seeded `generator`."""
        return generate(self, prompt_ids, max_new_tokens, temperature=temperature, top_p=top_p,
                        generator=generator, eos_token_id=self._eos(stop_at_eos))

    def _eos(self, stop_at_eos: bool) -> int | None:
        return self.eos_token_id if stop_at_eos else None
