"""Early-layer statistics of a query on a tiny random-weight model (the miner's inputs)."""

from __future__ import annotations

import math

from models.loaded import LoadedModel
from models.prompt_features import SCALAR_NAMES, probe_layer, prompt_statistics
from routing.features import SCALAR_COLUMNS, QueryFeatures


def test_scalar_names_match_the_miners_columns():
    assert SCALAR_NAMES == SCALAR_COLUMNS


def test_statistics_are_read_at_the_first_exit_layer(tiny_model: LoadedModel):
    assert probe_layer(tiny_model) == 1
    assert prompt_statistics(tiny_model, "Where is the station?").probe_layer == 1


def test_pooled_hidden_state_has_the_models_width(tiny_model: LoadedModel):
    statistics = prompt_statistics(tiny_model, "Where is the station?")
    assert len(statistics.pooled_hidden) == tiny_model.hidden_size


def test_entropy_is_between_zero_and_the_uniform_entropy(tiny_model: LoadedModel):
    statistics = prompt_statistics(tiny_model, "Where is the station?")
    assert 0.0 <= statistics.entropy_mean <= math.log(tiny_model.vocab_size) + 1e-4


def test_longer_queries_give_a_larger_prompt_length_feature(tiny_model: LoadedModel):
    short = prompt_statistics(tiny_model, "Hi.").scalars()[0]
    long = prompt_statistics(tiny_model, "Hi there, where is the station and when does the last train leave?").scalars()[0]
    assert long > short


def test_statistics_become_valid_miner_features(tiny_model: LoadedModel):
    statistics = prompt_statistics(tiny_model, "Where is the station?")
    features = QueryFeatures(2, statistics.scalars(), statistics.pooled_hidden)
    assert len(features.scalars) == len(SCALAR_COLUMNS)


def test_answer_confidence_of_the_greedy_answer_beats_a_random_answer(tiny_model: LoadedModel):
    from models.prompt_features import answer_confidence

    prompt = tiny_model.encode_chat("Where is the station?")
    greedy = tiny_model.generate_greedy(prompt, 6, stop_at_eos=False)
    shuffled = [(token * 7919 + 13) % tiny_model.vocab_size for token in greedy]
    assert answer_confidence(tiny_model, prompt, greedy) > answer_confidence(tiny_model, prompt, shuffled)


def test_answer_confidence_of_an_empty_answer_is_unknown(tiny_model: LoadedModel):
    from models.prompt_features import answer_confidence

    assert answer_confidence(tiny_model, [1, 2, 3], []) is None
