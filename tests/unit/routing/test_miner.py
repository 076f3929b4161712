"""The miner: training on labels from edge and cloud scores, the operating point, the JSON file."""

import numpy as np
import pytest

from routing.features import SCALAR_COLUMNS, QueryFeatures
from routing.miner import MinerFileError, MinerModel
from routing.operating_point import choose_operating_point, random_expectation, versus_random
from routing.training import TrainingConfig, hard_labels, train_miner


def _dataset(count: int = 120, seed: int = 0):
    """Queries whose entropy says whether the edge fails; pooled states are noise."""
    rng = np.random.default_rng(seed)
    features, edge, cloud = [], [], []
    for _ in range(count):
        entropy = float(rng.normal())
        scalars = rng.normal(size=len(SCALAR_COLUMNS))
        scalars[SCALAR_COLUMNS.index("entropy_mean")] = entropy
        features.append(QueryFeatures(int(rng.integers(5)), tuple(scalars), tuple(rng.normal(size=16))))
        hard = entropy > 0.3
        edge.append(0.1 if hard else 0.9)
        cloud.append(0.9)
    return features, np.array(edge), np.array(cloud)


def test_hard_labels_mark_queries_the_cloud_answers_better():
    assert hard_labels(np.array([0.2, 0.9, 0.5]), np.array([0.8, 0.1, 0.5])).tolist() == [1, 0, 0]


def test_trained_miner_ranks_hard_queries_above_easy_ones_on_unseen_queries():
    features, edge, cloud = _dataset(seed=0)
    trained = train_miner(features, edge, cloud)
    test_features, test_edge, _ = _dataset(seed=1)
    probabilities = trained.model.probability_hard(test_features)
    hard = test_edge < 0.5
    assert probabilities[hard].mean() > probabilities[~hard].mean() + 0.3


def test_operating_point_is_chosen_within_the_cloud_budget():
    features, edge, cloud = _dataset(seed=2)
    trained = train_miner(features, edge, cloud, TrainingConfig(max_cloud_ratio=0.5))
    assert trained.operating_point.cloud_query_ratio <= 0.5
    assert trained.model.threshold == trained.operating_point.threshold


def test_operating_point_takes_the_lowest_cloud_share_that_keeps_the_quality():
    point = choose_operating_point([0.9, 0.8, 0.1, 0.05], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0],
                                   target_quality_ratio=0.95, max_cloud_ratio=0.6)
    assert point.cloud_query_ratio == 0.5 and point.quality_ratio == 1.0 and point.reached_target


def test_operating_point_falls_back_to_the_best_quality_within_budget():
    point = choose_operating_point([0.9, 0.8, 0.7, 0.6], [0.0] * 4, [1.0] * 4, max_cloud_ratio=0.5)
    assert point.cloud_query_ratio == 0.5 and not point.reached_target


def test_random_expectation_mixes_edge_and_cloud_scores_by_the_share():
    assert random_expectation(np.array([0.0, 1.0]), np.array([1.0, 1.0]), 0.25).tolist() == [0.25, 1.0]


def test_routing_the_queries_the_cloud_answers_better_beats_random():
    edge, cloud = [0.0] * 20 + [1.0] * 20, [1.0] * 40
    versus = versus_random([True] * 20 + [False] * 20, edge, cloud)
    assert versus.cloud_query_ratio == 0.5 and versus.quality_ratio == 1.0
    assert versus.random_quality_ratio == 0.75 and versus.difference == pytest.approx(0.25)
    assert 0.0 < versus.ci95_halfwidth < versus.difference


def test_routing_the_wrong_queries_loses_to_random():
    edge, cloud = [0.0] * 20 + [1.0] * 20, [1.0] * 40
    assert versus_random([False] * 20 + [True] * 20, edge, cloud).difference == pytest.approx(-0.25)


def test_versus_random_refuses_unequal_inputs():
    with pytest.raises(ValueError):
        versus_random([True], [0.0, 1.0], [1.0, 1.0])


def test_miner_file_round_trips(tmp_path):
    features, edge, cloud = _dataset(count=40)
    model = train_miner(features, edge, cloud, TrainingConfig(folds=3)).model
    model.save(tmp_path / "miner.json")
    loaded = MinerModel.load(tmp_path / "miner.json")
    assert np.allclose(loaded.probability_hard(features), model.probability_hard(features))


def test_miner_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "miner.json"
    path.write_text("{not json")
    with pytest.raises(MinerFileError, match="miner.json"):
        MinerModel.load(path)


def test_miner_refuses_pooled_states_of_another_width():
    features, edge, cloud = _dataset(count=40)
    model = train_miner(features, edge, cloud, TrainingConfig(folds=3)).model
    other = QueryFeatures(0, (0.0,) * len(SCALAR_COLUMNS), (0.0,) * 8)
    with pytest.raises(MinerFileError, match="width"):
        model.probability_hard([other])


def test_features_with_a_nan_are_refused():
    with pytest.raises(ValueError, match="finite"):
        QueryFeatures(0, (float("nan"),) + (0.0,) * (len(SCALAR_COLUMNS) - 1), ())


def test_model_selection_keeps_a_setting_from_its_grid():
    features, edge, cloud = _dataset(count=60)
    trained = train_miner(features, edge, cloud, TrainingConfig(folds=3, pca_grid=(0, 2), regularisation_grid=(0.1, 1.0)))
    assert trained.config.pca_components in (0, 2) and trained.config.regularisation_c in (0.1, 1.0)
    assert len(trained.model.pca_components) == trained.config.pca_components
