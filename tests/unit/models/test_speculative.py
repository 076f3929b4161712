"""Acceptance rules of speculative decoding: greedy prefix, and speculative sampling keeping the verifier's distribution."""

import torch

from models.speculative import (
    greedy_accept,
    nucleus_probabilities,
    sampled_accept,
    sparse_distribution,
    support_of,
)


def one_hot_logits(tokens, vocab=6):
    logits = torch.zeros(len(tokens), vocab)
    logits[torch.arange(len(tokens)), torch.tensor(tokens)] = 5.0
    return logits


def test_greedy_accepts_the_agreeing_prefix_and_corrects_the_first_difference():
    assert greedy_accept(one_hot_logits([1, 2, 3, 4]), [1, 2, 5, 4]) == (2, 3)


def test_greedy_accepting_every_draft_has_no_correction():
    assert greedy_accept(one_hot_logits([1, 2, 3]), [1, 2, 3]) == (3, -1)


def test_greedy_rejecting_the_first_draft_corrects_it():
    assert greedy_accept(one_hot_logits([4]), [0]) == (0, 4)


def test_a_tie_tolerance_keeps_drafts_near_the_verifiers_best_and_corrects_the_rest():
    logits = torch.tensor([[0.0, 3.0, 2.9, 0.0], [0.0, 0.0, 3.0, 2.5]])  # best 1 (2 is 0.1 below), best 2 (3 is 0.5 below)
    assert greedy_accept(logits, [2, 3]) == (0, 1)  # no tolerance: the argmax only
    assert greedy_accept(logits, [2, 3], tie_tolerance=0.25) == (1, 2)  # 0.1 below stands, 0.5 below is corrected
    assert greedy_accept(logits, [2, 3], tie_tolerance=0.5) == (2, -1)
    assert greedy_accept(logits, [1, 2], tie_tolerance=0.25) == (2, -1)  # the argmax itself always stands
    tie = torch.tensor([[0.0, 3.0, 3.0, 0.0]])
    assert greedy_accept(tie, [2]) == (0, 1)  # an exact tie without a tolerance: the argmax, as cloud-only picks


def test_speculative_sampling_emits_tokens_distributed_as_the_verifier():
    target = torch.tensor([0.1, 0.4, 0.2, 0.3, 0.0])  # the verifier's p
    draft = torch.tensor([0.5, 0.1, 0.1, 0.1, 0.2])  # a poor draft q
    generator = torch.Generator().manual_seed(0)
    trials = 40_000
    counts = torch.zeros(5)
    for _ in range(trials):
        token = int(torch.multinomial(draft, 1, generator=generator))
        accepted, correction = sampled_accept(target.unsqueeze(0), [token], [draft], generator)
        counts[token if accepted else correction] += 1
    frequencies = counts / trials
    assert torch.allclose(frequencies, target, atol=0.01), frequencies  # 4 sigma at 40k trials is ~0.01
    assert counts[4] == 0, "a token the verifier never picks is never emitted"


def test_speculative_sampling_accepts_every_draft_from_the_verifiers_own_distribution():
    target = torch.tensor([[0.2, 0.8, 0.0], [0.5, 0.0, 0.5]])
    generator = torch.Generator().manual_seed(1)
    assert sampled_accept(target, [1, 2], [target[0], target[1]], generator) == (2, -1)


def test_nucleus_keeps_the_smallest_top_set_reaching_top_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = nucleus_probabilities(logits, 1.0, 0.7)
    assert torch.allclose(kept, torch.tensor([0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]))


def test_a_distribution_survives_the_trip_through_its_support():
    distribution = torch.tensor([0.0, 0.25, 0.0, 0.75])
    ids, values = support_of(distribution, 8)
    assert sorted(ids) == [1, 3]
    assert torch.allclose(sparse_distribution(ids, values, 4), distribution)
