"""Training the hard-example miner (scikit-learn logistic regression) on the router-training part.

Labels come from the edge's and the cloud's own task scores on the same queries: a query is hard when
the cloud's answer scores higher than the edge's. Each query is weighted by |cloud - edge| (plus a
floor), so a query where the cloud is far better counts more than a tie broken by a hair. The pooled
hidden state is reduced to a few principal components of the training part (numpy SVD), the scalars
standardised. The operating point is chosen on out-of-fold probabilities of the training part, so the
threshold is not tuned on answers the classifier has memorised; the held-out part is never seen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold

from routing.features import QueryFeatures, stack_features
from routing.miner import MinerModel
from routing.operating_point import OperatingPoint, choose_operating_point

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    pca_components: int = 8  # principal components kept of the pooled hidden state
    regularisation_c: float = 0.5  # inverse L2 strength of the logistic regression
    # model selection on the training part only: every (components, C) pair is scored by the out-of-fold
    # quality ratio at its operating point; () keeps the two values above
    pca_grid: tuple[int, ...] = ()
    regularisation_grid: tuple[float, ...] = ()
    weight_floor: float = 0.05  # sample weight added to |cloud - edge| so ties still count
    folds: int = 5  # out-of-fold probabilities for choosing the threshold
    seed: int = 0
    target_quality_ratio: float = 0.95  # the operating point: quality vs cloud-only to keep
    max_cloud_ratio: float = 0.5  # most queries the cloud may take


@dataclass(frozen=True)
class TrainedMiner:
    model: MinerModel
    operating_point: OperatingPoint  # chosen on out-of-fold probabilities of the training part
    out_of_fold: np.ndarray  # (N,) P(hard) of each training query from a model that did not see it
    hard_share: float  # share of training queries labelled hard
    config: TrainingConfig  # the settings chosen (after model selection)


def hard_labels(edge_scores: np.ndarray, cloud_scores: np.ndarray) -> np.ndarray:
    """1 where the cloud's answer scores higher than the edge's."""
    return (cloud_scores > edge_scores + 1e-9).astype(int)


def train_miner(features: Sequence[QueryFeatures], edge_scores: Sequence[float], cloud_scores: Sequence[float],
                config: TrainingConfig = TrainingConfig(), *, edge_model: str = "", cloud_model: str = "") -> TrainedMiner:
    """Fit the miner and choose its operating point. Raises ValueError for fewer than 2 queries or unequal inputs."""
    edge, cloud = np.asarray(edge_scores, dtype=float), np.asarray(cloud_scores, dtype=float)
    if len(features) < 2 or not len(features) == len(edge) == len(cloud):
        raise ValueError("need at least 2 queries with one edge and one cloud score each")
    labels = hard_labels(edge, cloud)
    weights = np.abs(cloud - edge) + config.weight_floor
    candidates = []
    for components in config.pca_grid or (config.pca_components,):
        for strength in config.regularisation_grid or (config.regularisation_c,):
            candidate = replace(config, pca_components=components, regularisation_c=strength)
            out_of_fold = _out_of_fold(features, labels, weights, candidate)
            point = choose_operating_point(out_of_fold, edge, cloud, target_quality_ratio=config.target_quality_ratio,
                                           max_cloud_ratio=config.max_cloud_ratio)
            candidates.append((point.quality_ratio, -point.cloud_query_ratio, candidate, out_of_fold, point))
    _, _, config, out_of_fold, point = max(candidates, key=lambda item: (item[0], item[1]))
    model = _fit(features, labels, weights, config)
    model = MinerModel(**{**{name: getattr(model, name) for name in model.__dataclass_fields__},
                          "threshold": point.threshold, "edge_model": edge_model, "cloud_model": cloud_model,
                          "trained_on": len(features)})
    logger.info("miner trained on %d queries (%.0f %% hard; %d components, C %.2f): threshold %.3f, cloud share %.2f, "
                "quality ratio %.3f", len(features), 100 * labels.mean(), config.pca_components, config.regularisation_c,
                point.threshold, point.cloud_query_ratio, point.quality_ratio)
    return TrainedMiner(model, point, out_of_fold, float(labels.mean()), config)


def _fit(features: Sequence[QueryFeatures], labels: np.ndarray, weights: np.ndarray,
         config: TrainingConfig) -> MinerModel:
    """The standardisation, PCA and logistic regression of one training set (threshold 0.5 until chosen)."""
    types, scalars, pooled = stack_features(list(features))
    scalar_mean, scalar_scale = scalars.mean(axis=0), scalars.std(axis=0)
    scalar_scale[scalar_scale < 1e-9] = 1.0
    count = min(config.pca_components, len(features) - 1, pooled.shape[1])
    pca_mean = pooled.mean(axis=0)
    if count > 0:
        _, _, right = np.linalg.svd(pooled - pca_mean, full_matrices=False)
        components = right[:count]  # (K, C)
        projection = (pooled - pca_mean) @ components.T
        pca_scale = projection.std(axis=0)
        pca_scale[pca_scale < 1e-9] = 1.0
    else:
        components, pca_scale = np.zeros((0, pooled.shape[1])), np.zeros(0)
    model = MinerModel(tuple(scalar_mean), tuple(scalar_scale), tuple(pca_mean), tuple(map(tuple, components)),
                       tuple(pca_scale), coef=(0.0,) * (types.shape[1] + scalars.shape[1] + count), intercept=0.0,
                       threshold=0.5)
    design = model.design(list(features))
    if len(set(labels.tolist())) < 2:  # one class only: a constant probability
        rate = float(np.clip(labels.mean(), 1e-3, 1 - 1e-3))
        return MinerModel(**{**_fields(model), "intercept": float(np.log(rate / (1 - rate)))})
    classifier = LogisticRegression(C=config.regularisation_c, max_iter=2000)
    classifier.fit(design, labels, sample_weight=weights)
    return MinerModel(**{**_fields(model), "coef": tuple(float(x) for x in classifier.coef_[0]),
                         "intercept": float(classifier.intercept_[0])})


def _out_of_fold(features: Sequence[QueryFeatures], labels: np.ndarray, weights: np.ndarray,
                 config: TrainingConfig) -> np.ndarray:
    folds = min(config.folds, len(features))
    smallest_class = min(int(labels.sum()), int(len(labels) - labels.sum()))
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=config.seed) if smallest_class >= folds
                else KFold(folds, shuffle=True, random_state=config.seed))
    probabilities = np.zeros(len(features))
    items = list(features)
    for train, test in splitter.split(np.zeros(len(items)), labels):
        model = _fit([items[i] for i in train], labels[train], weights[train], config)
        probabilities[test] = model.probability_hard([items[i] for i in test])
    return probabilities


def _fields(model: MinerModel) -> dict[str, object]:
    return {name: getattr(model, name) for name in model.__dataclass_fields__}
