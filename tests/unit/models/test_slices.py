from __future__ import annotations

import pytest
import torch

from models.loaded import LoadedModel
from models.reference import reference_greedy as reference_logits


@torch.no_grad()
def split_logits(loaded: LoadedModel, prompt_ids: list[int], tokens: list[int], split_layer: int) -> list[torch.Tensor]:
    embedding, edge, cloud, head = (loaded.embedding_slice(), loaded.decoder_slice(0, split_layer),
                                    loaded.decoder_slice(split_layer, loaded.num_layers), loaded.head_slice())
    outputs = [head(cloud(edge(embedding(torch.tensor([prompt_ids])))))[0]]
    for token in tokens:
        outputs.append(head(cloud(edge(embedding(torch.tensor([[token]])))))[0])
    return outputs


@pytest.mark.parametrize("split_layer", [1, 2, 3])
def test_two_slices_match_full_model_over_prompt_and_50_steps(tiny_model: LoadedModel, split_layer: int) -> None:
    prompt_ids = tiny_model.encode_chat("Write a short poem about glaciers.")
    expected, tokens = reference_logits(tiny_model, prompt_ids, steps=50)
    actual = split_logits(tiny_model, prompt_ids, tokens, split_layer)
    worst = max(float((a - e).abs().max()) for a, e in zip(actual, expected, strict=True))
    assert worst <= 1e-4


def test_slice_cache_length_follows_positions(tiny_model: LoadedModel) -> None:
    decoder = tiny_model.decoder_slice(0, 2)
    hidden_states = tiny_model.embedding_slice()(torch.tensor([[5, 6, 7, 8]]))
    decoder(hidden_states)
    assert decoder.length == 4
    decoder(hidden_states[:, :1])
    assert decoder.length == 5


def test_truncate_then_recompute_equals_never_having_gone_ahead(tiny_model: LoadedModel) -> None:
    embedding, decoder = tiny_model.embedding_slice(), tiny_model.decoder_slice(1, 4)
    prefix = embedding(torch.tensor([[10, 11, 12, 13, 14]]))
    draft = embedding(torch.tensor([[20, 21, 22]]))
    correction = embedding(torch.tensor([[30]]))
    decoder(prefix)
    decoder(draft)
    decoder.truncate(5)  # reject the whole draft
    after_rollback = decoder(correction)
    fresh = tiny_model.decoder_slice(1, 4)
    fresh(prefix)
    assert torch.allclose(after_rollback, fresh(correction), atol=1e-6)


def test_forward_at_earlier_position_truncates_first(tiny_model: LoadedModel) -> None:
    embedding, decoder = tiny_model.embedding_slice(), tiny_model.decoder_slice(0, 4)
    states = embedding(torch.tensor([[3, 4, 5, 6]]))
    decoder(states)
    out = decoder(states[:, 2:3], position=2)
    fresh = tiny_model.decoder_slice(0, 4)
    assert torch.allclose(out, fresh(states[:, :3])[:, 2:3], atol=1e-6)
    assert decoder.length == 3


def test_reset_forgets_every_position(tiny_model: LoadedModel) -> None:
    decoder = tiny_model.decoder_slice(0, 1)
    decoder(tiny_model.embedding_slice()(torch.tensor([[1, 2, 3]])))
    decoder.reset()
    assert decoder.length == 0


def test_skipping_ahead_of_the_cache_is_refused(tiny_model: LoadedModel) -> None:
    decoder = tiny_model.decoder_slice(0, 1)
    with pytest.raises(AssertionError, match="skips ahead"):
        decoder(tiny_model.embedding_slice()(torch.tensor([[1]])), position=3)


def test_slice_range_is_checked(tiny_model: LoadedModel) -> None:
    with pytest.raises(AssertionError, match="outside"):
        tiny_model.decoder_slice(2, 5)


def test_greedy_generation_matches_reference(tiny_model: LoadedModel) -> None:
    prompt_ids = tiny_model.encode_chat("What is DNA?")
    _, tokens = reference_logits(tiny_model, prompt_ids, steps=12)
    assert tiny_model.generate_greedy(prompt_ids, 12, stop_at_eos=False) == tokens


def test_sampled_generation_is_reproducible_with_a_seed(tiny_model: LoadedModel) -> None:
    prompt_ids = tiny_model.encode_chat("Tell me a story.")
    first = tiny_model.generate_sampled(prompt_ids, 10, torch.Generator().manual_seed(3), temperature=1.5, stop_at_eos=False)
    second = tiny_model.generate_sampled(prompt_ids, 10, torch.Generator().manual_seed(3), temperature=1.5, stop_at_eos=False)
    assert first == second and len(first) == 10
