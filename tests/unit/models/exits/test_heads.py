from __future__ import annotations

import time
from pathlib import Path

import torch

from models.exits.data import ExitData
from models.exits.heads import ExitHeads, exit_features
from models.exits.policy import ExitFeatures
from models.exits.training import TrainingConfig, argmax_agreement, distill_heads, rms_norm
from models.loaded import LoadedModel


def test_untrained_head_is_the_plain_final_head(tiny_model: LoadedModel) -> None:
    hidden_states = torch.randn(1, 3, tiny_model.hidden_size)
    plain = torch.softmax(tiny_model.model.lm_head(tiny_model.model.model.norm(hidden_states)), dim=-1)
    assert torch.allclose(tiny_model.exit_probabilities(1, hidden_states), plain, atol=1e-6)


def test_exit_probabilities_sum_to_one(tiny_model: LoadedModel) -> None:
    probabilities = tiny_model.exit_probabilities(2, torch.randn(2, 5, tiny_model.hidden_size))
    assert probabilities.shape == (2, 5, tiny_model.vocab_size)
    assert torch.allclose(probabilities.sum(-1), torch.ones(2, 5), atol=1e-5)


def test_heads_round_trip_through_safetensors(tmp_path: Path) -> None:
    heads = ExitHeads(16, (2, 4))
    torch.nn.init.normal_(heads.adapter(4).proj.weight)
    heads.save(tmp_path / "heads.safetensors")
    loaded = ExitHeads.load(tmp_path / "heads.safetensors")
    assert loaded.exit_layers == (2, 4)
    assert torch.equal(loaded.adapter(4).proj.weight, heads.adapter(4).proj.weight)
    assert ExitHeads.load(tmp_path / "heads.safetensors", only_layers=(2,)).exit_layers == (2,)


def test_exit_features_follow_feature_order() -> None:
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    features, tokens, top = exit_features(probabilities, torch.tensor([0, 1]), torch.tensor([0.5, 0.6]))
    assert features.shape == (2, len(ExitFeatures.names()))
    assert torch.allclose(features[:, 0], torch.tensor([0.7, 0.4]))
    assert torch.allclose(features[:, 1], torch.tensor([0.5, 0.05]))
    assert features[:, 3].tolist() == [1.0, 0.0]
    assert tokens.tolist() == [0, 0] and torch.allclose(top, torch.tensor([0.7, 0.4]))
    assert features[:, 5:].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # no copy candidates given


def test_copy_features_say_whether_the_head_picks_the_copy_candidate() -> None:
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    copies = torch.tensor([[0, -1], [1, 2]])  # row 0: copy-one candidate 0; row 1: copy-two candidate 2
    features, _, _ = exit_features(probabilities, None, None, copies)
    names = ExitFeatures.names()
    assert features[:, names.index("matches_copy_one")].tolist() == [1.0, 0.0]
    assert features[:, names.index("matches_copy_two")].tolist() == [0.0, 1.0]


@torch.no_grad()
def tiny_distillation_data(loaded: LoadedModel, count: int = 256) -> ExitData:
    """Random token sequences through the tiny model, states taken after layers 1 and 2."""
    torch.manual_seed(0)
    ids = torch.randint(3, 2000, (8, count // 8))
    embedding, first, second, rest = (loaded.embedding_slice(), loaded.decoder_slice(0, 1),
                                      loaded.decoder_slice(1, 2), loaded.decoder_slice(2, 4))
    h1 = first(embedding(ids))
    h2 = second(h1)
    final = loaded.model.model.norm(rest(h2))
    teacher = loaded.model.lm_head(final).argmax(-1)
    flat = lambda t: t.reshape(count, -1).to(torch.bfloat16)  # noqa: E731
    return ExitData({1: flat(h1), 2: flat(h2)}, flat(final), teacher.reshape(count),
                    torch.zeros(count, dtype=torch.long), torch.ones(count, dtype=torch.bool),
                    torch.full((count, 2), -1))


def test_distillation_on_tiny_model_runs_in_seconds_and_lowers_kl(tiny_model: LoadedModel) -> None:
    data = tiny_distillation_data(tiny_model)
    # Scale the hidden states so the untrained heads are far from the teacher.
    data.hidden = {layer: (h.float() * torch.linspace(0.2, 3, h.shape[1])).to(torch.bfloat16) for layer, h in data.hidden.items()}
    norm = tiny_model.model.model.norm
    config = TrainingConfig(exit_layers=(1, 2), epochs=4, batch_size=64, learning_rate=1e-2)
    started = time.perf_counter()
    heads, history = distill_heads(data, norm.weight.detach(), norm.variance_epsilon, tiny_model.model.lm_head.weight, config)
    assert time.perf_counter() - started < 60  # ~3 s on an idle 2-core machine
    assert history[-1]["kl_sum_per_position"] < history[0]["kl_sum_per_position"]
    assert heads.exit_layers == (1, 2)


def test_distillation_records_calibration_agreement_and_keeps_the_best_epoch(tiny_model: LoadedModel) -> None:
    data = tiny_distillation_data(tiny_model)
    norm = tiny_model.model.model.norm
    config = TrainingConfig(exit_layers=(1, 2), epochs=3, batch_size=64, learning_rate=1e-2, weight_decay=0.5)
    heads, history = distill_heads(data, norm.weight.detach(), norm.variance_epsilon, tiny_model.model.lm_head.weight,
                                   config, validation=data.subset(torch.arange(len(data)) < 64))
    assert all(0.0 <= record["calibration_agreement_2"] <= 1.0 for record in history)
    embedding = tiny_model.model.lm_head.weight.detach().to(torch.bfloat16)
    kept = argmax_agreement(heads, data.subset(torch.arange(len(data)) < 64), norm.weight, norm.variance_epsilon, embedding)
    best = max(history, key=lambda record: record["calibration_agreement_1"] + record["calibration_agreement_2"])
    assert kept == {1: best["calibration_agreement_1"], 2: best["calibration_agreement_2"]}


def test_concatenated_data_keeps_sequences_apart(tiny_model: LoadedModel) -> None:
    data = tiny_distillation_data(tiny_model, count=16)
    data.sequence_index = torch.arange(16) // 4  # sequences 0..3
    both = ExitData.concat([data, data])
    assert len(both) == 32 and both.hidden.keys() == data.hidden.keys()
    assert both.sequence_index.unique().tolist() == list(range(8))


def test_rms_norm_matches_llama_norm(tiny_model: LoadedModel) -> None:
    norm = tiny_model.model.model.norm
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(4, tiny_model.hidden_size)
    assert torch.allclose(rms_norm(x, norm.weight, norm.variance_epsilon), norm(x), atol=1e-5)


def test_merged_heads_keep_every_adapter_and_refuse_a_layer_twice():
    import pytest

    first, second = ExitHeads(8, (1, 2)), ExitHeads(8, (3,))
    with torch.no_grad():
        for heads in (first, second):
            for layer in heads.exit_layers:
                heads.adapter(layer).proj.weight.fill_(float(layer))
    merged = first.merged(second)
    assert merged.exit_layers == (1, 2, 3)
    assert all(float(merged.adapter(layer).proj.weight[0, 0].detach()) == layer for layer in (1, 2, 3))
    with pytest.raises(AssertionError, match="both have heads"):
        first.merged(ExitHeads(8, (2,)))
