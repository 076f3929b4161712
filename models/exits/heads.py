"""Early-exit heads: a residual linear adapter per exit layer in front of the frozen norm + LM head.

An exit head at layer e maps the hidden state after e decoder layers to next-token probabilities:
p = softmax(lm_head(norm(h + W_e h))). W_e starts at zero (so an untrained head is the plain
"final norm + LM head" on an intermediate state) and is trained by self-distillation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.exits.policy import ExitFeatures

logger = logging.getLogger(__name__)

EXIT_HEADS_NAME = "exit_heads.safetensors"
DEFAULT_EXIT_LAYERS = (10, 15, 20)


class ExitAdapter(nn.Module):
    """h -> h + W h, W (C, C) initialised to zero."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.proj(hidden_states)  # (B, T, C)


class ExitHeads(nn.Module):
    """One ExitAdapter per exit layer; norm and LM head are borrowed from the model, never owned."""

    def __init__(self, hidden_size: int, exit_layers: tuple[int, ...] = DEFAULT_EXIT_LAYERS) -> None:
        super().__init__()
        assert list(exit_layers) == sorted(set(exit_layers)), f"exit layers must ascend: {exit_layers}"
        self.hidden_size = hidden_size
        self.adapters = nn.ModuleDict({str(layer): ExitAdapter(hidden_size) for layer in exit_layers})

    @property
    def exit_layers(self) -> tuple[int, ...]:
        return tuple(int(layer) for layer in self.adapters)

    def adapter(self, exit_layer: int) -> ExitAdapter:
        assert str(exit_layer) in self.adapters, f"no exit head at layer {exit_layer}: have {self.exit_layers}"
        return self.adapters[str(exit_layer)]  # type: ignore[return-value]

    def logits(self, exit_layer: int, hidden_states: torch.Tensor, norm: nn.Module, lm_head: nn.Module) -> torch.Tensor:
        """(B, T, C) hidden states after `exit_layer` layers -> (B, T, V) logits (float32)."""
        adapted = self.adapter(exit_layer)(hidden_states.to(self.adapter(exit_layer).proj.weight.dtype))
        return lm_head(norm(adapted.to(hidden_states.dtype))).float()

    def merged(self, other: ExitHeads) -> ExitHeads:
        """These heads and `other`'s (at layers these lack) in one ExitHeads."""
        assert not set(self.exit_layers) & set(other.exit_layers), f"both have heads at {self.exit_layers}"
        heads = ExitHeads(self.hidden_size, tuple(sorted({*self.exit_layers, *other.exit_layers})))
        with torch.no_grad():
            for source in (self, other):
                for layer in source.exit_layers:
                    heads.adapter(layer).proj.weight.copy_(source.adapter(layer).proj.weight)
        return heads.eval()

    def save(self, path: Path) -> None:
        metadata = {"hidden_size": str(self.hidden_size), "exit_layers": json.dumps(list(self.exit_layers))}
        tensors = {f"exit.{layer}.weight": self.adapter(layer).proj.weight.detach().float().contiguous()
                   for layer in self.exit_layers}
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: Path, only_layers: tuple[int, ...] | None = None) -> ExitHeads:
        """Load heads saved by `save`, optionally keeping only some exit layers."""
        tensors = load_file(str(path))
        layers = tuple(sorted(int(name.split(".")[1]) for name in tensors))
        if only_layers is not None:
            layers = tuple(layer for layer in layers if layer in only_layers)
        hidden_size = tensors[f"exit.{layers[0]}.weight"].shape[0]
        heads = cls(hidden_size, layers)
        with torch.no_grad():
            for layer in layers:
                heads.adapter(layer).proj.weight.copy_(tensors[f"exit.{layer}.weight"])
        return heads.eval()


def exit_features(probabilities: torch.Tensor, previous_tokens: torch.Tensor | None,
                  previous_top_prob: torch.Tensor | None,
                  copy_candidates: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-position confidence features of one exit head.

    probabilities (N, V); previous_* (N,) from the previous exit head or None at the first exit;
    copy_candidates (N, 2) from `models.exits.copying` (NO_CANDIDATE where none; None: unknown, no match).
    Returns (features (N, F) in `ExitFeatures` order, argmax tokens (N,), top probability (N,)).
    """
    top2 = probabilities.topk(2, dim=-1).values  # (N, 2)
    tokens = probabilities.argmax(dim=-1)  # (N,)
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=-1)  # (N,)
    if previous_tokens is None or previous_top_prob is None:
        agrees = torch.zeros_like(entropy)
        prev_top = torch.zeros_like(entropy)
    else:
        agrees = (tokens == previous_tokens).float()
        prev_top = previous_top_prob
    copies = torch.full((tokens.shape[0], 2), -1) if copy_candidates is None else copy_candidates
    matches = (tokens[:, None] == copies).float()  # (N, 2); NO_CANDIDATE (-1) never matches a token id
    columns = {"top_prob": top2[:, 0], "margin": top2[:, 0] - top2[:, 1], "entropy": entropy,
               "agrees_with_previous": agrees, "previous_top_prob": prev_top,
               "matches_copy_one": matches[:, 0], "matches_copy_two": matches[:, 1]}
    features = torch.stack([columns[name] for name in ExitFeatures.names()], dim=-1)  # (N, F)
    return features, tokens, top2[:, 0]
