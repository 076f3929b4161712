"""Distillation data for exit heads: the full model's continuations and its hidden states.

For each prompt the full model writes continuations (greedy, optionally sampled); one
teacher-forced pass over prompt + continuation records, with forward hooks on the decoder layers,
the hidden state after each exit layer and the final normed state (teacher logits = LM head of it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from models.exits.copying import candidates_along
from models.exits.corpus import CorpusPrompt
from models.loaded import LoadedModel

logger = logging.getLogger(__name__)

IM_START_TOKEN_ID = 1  # "<|im_start|>" opens every chat turn in SmolLM2
DATA_FORMAT = 2  # part of the cache key: 2 added copy candidates (older cached data is recollected)


@dataclass
class ExitData:
    """N positions; position t of a sequence carries the states that predict token t + 1."""

    hidden: dict[int, torch.Tensor]  # exit layer -> (N, C) bfloat16, after that many decoder layers
    final: torch.Tensor  # (N, C) bfloat16, final-norm output (teacher logits = lm_head(final))
    teacher_tokens: torch.Tensor  # (N,) int64, full model's argmax (float32 LM head)
    sequence_index: torch.Tensor  # (N,) int64, which continuation the position belongs to
    is_generated: torch.Tensor  # (N,) bool, predicts a generated token (not a prompt token)
    copy_candidates: torch.Tensor  # (N, 2) int64, models/exits/copying.py candidates at the position (-1: none)

    def __len__(self) -> int:
        return int(self.teacher_tokens.shape[0])

    def subset(self, mask: torch.Tensor) -> ExitData:
        return ExitData({layer: h[mask] for layer, h in self.hidden.items()}, self.final[mask],
                        self.teacher_tokens[mask], self.sequence_index[mask], self.is_generated[mask],
                        self.copy_candidates[mask])

    @staticmethod
    def concat(parts: list[ExitData]) -> ExitData:
        """Positions of all parts in order; sequence indices are offset so they stay distinct."""
        assert parts and all(p.hidden.keys() == parts[0].hidden.keys() for p in parts), "parts need the same exit layers"
        offsets, offset = [], 0
        for part in parts:
            offsets.append(offset)
            offset += int(part.sequence_index.max()) + 1 if len(part) else 0
        return ExitData({layer: torch.cat([p.hidden[layer] for p in parts]) for layer in parts[0].hidden},
                        torch.cat([p.final for p in parts]), torch.cat([p.teacher_tokens for p in parts]),
                        torch.cat([p.sequence_index + o for p, o in zip(parts, offsets, strict=True)]),
                        torch.cat([p.is_generated for p in parts]), torch.cat([p.copy_candidates for p in parts]))


@dataclass(frozen=True, slots=True)
class Continuation:
    prompt_ids: list[int]
    new_ids: list[int]


@torch.no_grad()
def continue_prompts(loaded: LoadedModel, prompts: list[CorpusPrompt], max_new_tokens: int,
                     sampled: bool, seed: int, batch_size: int = 16) -> list[Continuation]:
    """Batched continuations with transformers' generate (left padding); greedy or sampled (T=0.9)."""
    tokenizer, model = loaded.tokenizer, loaded.model
    pad_id = int(tokenizer.pad_token_id)
    continuations: list[Continuation] = []
    torch.manual_seed(seed)
    label = "sampled" if sampled else "greedy"
    for start in tqdm(range(0, len(prompts), batch_size), desc=f"{label} continuations", unit="batch", file=sys.stderr):
        encoded = [loaded.encode_chat(p.text) for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded])  # (B, T)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                do_sample=sampled, temperature=0.9 if sampled else None, top_p=0.95 if sampled else None,
                                top_k=None, pad_token_id=pad_id, eos_token_id=loaded.eos_token_id)
        for ids, row in zip(encoded, output[:, width:].tolist(), strict=True):
            new_ids = row[: row.index(loaded.eos_token_id) + 1] if loaded.eos_token_id in row else row
            continuations.append(Continuation(ids, new_ids))
    return continuations


def _user_turn_start(prompt_ids: list[int]) -> int:
    """Index of the user turn (skips the system prompt every chat shares)."""
    starts = [i for i, token in enumerate(prompt_ids) if token == IM_START_TOKEN_ID]
    return starts[1] if len(starts) > 1 else 0


@torch.no_grad()
def record_states(loaded: LoadedModel, continuations: list[Continuation], exit_layers: tuple[int, ...],
                  batch_size: int = 8) -> ExitData:
    """Teacher-forced pass recording exit-layer and final states for every position we train on."""
    layers = loaded.model.model.layers
    captured: dict[int, torch.Tensor] = {}
    hooks = [layers[layer - 1].register_forward_hook(
        lambda _m, _i, output, layer=layer: captured.__setitem__(layer, output[0] if isinstance(output, tuple) else output))
        for layer in exit_layers]
    parts: dict[str, list[torch.Tensor]] = {"final": [], "teacher": [], "sequence": [], "generated": [], "copies": []}
    hidden_parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in exit_layers}
    try:
        for start in tqdm(range(0, len(continuations), batch_size), desc="recording states", unit="batch",
                          file=sys.stderr):
            batch = continuations[start:start + batch_size]
            sequences = [c.prompt_ids + c.new_ids for c in batch]
            width = max(len(s) for s in sequences)
            input_ids = torch.tensor([s + [0] * (width - len(s)) for s in sequences])  # (B, T) right-padded
            attention_mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
            final = loaded.model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, C)
            for row, cont in enumerate(batch):
                first, last = _user_turn_start(cont.prompt_ids), len(cont.prompt_ids) + len(cont.new_ids) - 1
                positions = torch.arange(first, last)  # each predicts the next token
                parts["final"].append(final[row, positions].to(torch.bfloat16))
                for layer in exit_layers:
                    hidden_parts[layer].append(captured[layer][row, positions].to(torch.bfloat16))
                logits = loaded.model.lm_head(final[row, positions])  # (n, V) float32
                parts["teacher"].append(logits.argmax(dim=-1))
                parts["sequence"].append(torch.full((len(positions),), start + row))
                parts["generated"].append(positions >= len(cont.prompt_ids) - 1)
                parts["copies"].append(torch.tensor(candidates_along(sequences[row], first, last)).reshape(-1, 2))
    finally:
        for hook in hooks:
            hook.remove()
    return ExitData({layer: torch.cat(hidden_parts[layer]) for layer in exit_layers}, torch.cat(parts["final"]),
                    torch.cat(parts["teacher"]), torch.cat(parts["sequence"]), torch.cat(parts["generated"]),
                    torch.cat(parts["copies"]))


def collect(loaded: LoadedModel, prompts: list[CorpusPrompt], exit_layers: tuple[int, ...], max_new_tokens: int,
            sampled_per_prompt: int, seed: int, cache_dir: Path | None) -> ExitData:
    """Greedy (+ `sampled_per_prompt` sampled) continuations and their states, cached on disk by content."""
    key = hashlib.sha256(json.dumps([loaded.manifest.files["model.safetensors"].sha256, [p.text for p in prompts],
                                     list(exit_layers), max_new_tokens, sampled_per_prompt, seed,
                                     DATA_FORMAT]).encode()).hexdigest()[:16]
    cache_path = None if cache_dir is None else cache_dir / f"exit-data-{key}.pt"
    if cache_path is not None and cache_path.is_file():
        logger.info("reusing distillation data %s", cache_path)
        return ExitData(**torch.load(cache_path))
    started = time.perf_counter()
    continuations = continue_prompts(loaded, prompts, max_new_tokens, sampled=False, seed=seed)
    for round_index in range(sampled_per_prompt):
        continuations += continue_prompts(loaded, prompts, max_new_tokens, sampled=True, seed=seed + 1 + round_index)
    logger.info("generated %d continuations in %.1f s", len(continuations), time.perf_counter() - started)
    data = record_states(loaded, continuations, exit_layers)
    logger.info("recorded %d positions in %.1f s", len(data), time.perf_counter() - started)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data.__dict__, cache_path)
    return data
