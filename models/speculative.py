"""Speculative decoding's acceptance rules: which drafted tokens the full model keeps, and its next token.

Drafts d_1..d_g were proposed for g consecutive positions; the verifier's distributions (or logits)
for those positions come from one forward over the g states that proposed them. Both rules return
`(accepted, token)`: the first `accepted` drafts stand, then `token` (the correction at the first
rejected position), or -1 when every draft stood (no state predicts the position after the last
draft yet; the next round starts from it).

- greedy: accept while the draft equals the verifier's argmax; the output is the verifier's own
  greedy output, token for token.
- sampling (Leviathan et al. 2023, Chen et al. 2023): accept d_i with probability
  min(1, p_i(d_i) / q_i(d_i)); on a rejection draw from normalize(max(0, p_i - q_i)). Every emitted
  token is then distributed exactly as the verifier's p (temperature + top-p applied to both sides).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)


def nucleus_probabilities(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """(..., V) logits -> (..., V) float32 sampling distribution: softmax(logits / T), cut to the top-p nucleus.

    The nucleus always keeps the top token; temperature must be > 0.
    """
    assert temperature > 0.0, "a sampling distribution needs temperature > 0 (0 is greedy)"
    probabilities = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probabilities
    sorted_probs, sorted_ids = probabilities.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p
    kept = torch.zeros_like(probabilities).scatter(-1, sorted_ids, sorted_probs * keep)
    return kept / kept.sum(dim=-1, keepdim=True)


def greedy_accept(logits: torch.Tensor, draft_ids: Sequence[int], tie_tolerance: float = 0.0) -> tuple[int, int]:
    """(g, V) verifier logits at the g drafting positions -> (accepted drafts, correction or -1).

    A draft stands where it is the verifier's argmax, or (`tie_tolerance` > 0) within that many logits of
    it: the verifier saw rows too coarse to tell such a near-tie apart (int8 states), and the edge's draft
    came from exact rows."""
    assert logits.dim() == 2 and logits.shape[0] == len(draft_ids), \
        f"logits {tuple(logits.shape)} must be (g, V) for {len(draft_ids)} drafts"
    best, choices = logits.max(dim=-1)
    drafted = logits.gather(1, torch.tensor(list(draft_ids)).unsqueeze(1)).squeeze(1)
    for index, (draft, choice) in enumerate(zip(draft_ids, choices.tolist(), strict=True)):
        near = tie_tolerance > 0 and bool(drafted[index] >= best[index] - tie_tolerance)
        if draft != choice and not near:  # without a tolerance an exact tie goes to the argmax, as cloud-only's
            return index, int(choice)
    return len(draft_ids), -1


def sampled_accept(target: torch.Tensor, draft_ids: Sequence[int], draft: Sequence[torch.Tensor],
                   generator: torch.Generator) -> tuple[int, int]:
    """(g, V) verifier probabilities, drafts, and the g (V,) draft distributions -> (accepted, correction or -1).

    Raises ValueError when a draft token has zero probability under its own draft distribution.
    """
    assert target.dim() == 2 and target.shape[0] == len(draft_ids) == len(draft), \
        f"target {tuple(target.shape)} must be (g, V) for {len(draft_ids)} drafts and distributions"
    for index, token in enumerate(draft_ids):
        p, q = target[index], draft[index]
        if float(q[token]) <= 0.0:
            raise ValueError(f"draft {index} (token {token}) has probability 0 under its draft distribution")
        ratio = float(p[token]) / float(q[token])
        if float(torch.rand((), generator=generator)) < min(1.0, ratio):
            continue
        residual = (p - q).clamp(min=0.0)
        total = float(residual.sum())
        if total <= 0.0:  # p == q up to rounding: any rejection is noise; draw from p itself
            residual, total = p, float(p.sum())
        return index, int(torch.multinomial(residual / total, 1, generator=generator))
    return len(draft_ids), -1


def sparse_distribution(ids: Sequence[int], probabilities: Sequence[float], vocab_size: int) -> torch.Tensor:
    """A (V,) distribution from its support (what travels on the wire), renormalised."""
    assert len(ids) == len(probabilities) and ids, "a distribution needs a non-empty support"
    dense = torch.zeros(vocab_size, dtype=torch.float32)
    dense[torch.tensor(list(ids), dtype=torch.long)] = torch.tensor(list(probabilities), dtype=torch.float32)
    return dense / dense.sum()


def support_of(probabilities: torch.Tensor, max_support: int) -> tuple[list[int], list[float]]:
    """The nonzero entries of a (V,) distribution, the `max_support` most likely (renormalised by the receiver)."""
    nonzero = int((probabilities > 0).sum())
    values, ids = probabilities.topk(min(nonzero, max_support))
    return [int(i) for i in ids], [float(v) for v in values]
