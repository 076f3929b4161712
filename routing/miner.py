"""The learned hard-example miner at inference time: numpy only, loaded from a JSON file.

P(hard | features) = sigmoid(w . z + b), z = [type one-hot, standardised scalars, standardised PCA
projection of the pooled hidden state]. "Hard" means the cloud's answer scores higher than the edge's;
a query whose probability reaches `threshold` goes to the cloud. Training (scikit-learn) is in
routing/training.py; the JSON keeps every number inference needs, so the edge needs no scikit-learn.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routing.features import SCALAR_COLUMNS, TASK_TYPE_COLUMNS, QueryFeatures, stack_features

logger = logging.getLogger(__name__)

MINER_FORMAT = 1


def miner_file(directory: Path, edge_model: str) -> Path:
    """Where the miner trained for `edge_model` lives in `directory` (written by router_data, read by edges)."""
    return directory / f"miner-{edge_model}.json"


class MinerFileError(ValueError):
    """A miner file is missing, unreadable or does not fit the features it is given."""


@dataclass(frozen=True)
class MinerModel:
    scalar_mean: tuple[float, ...]  # per SCALAR_COLUMNS
    scalar_scale: tuple[float, ...]
    pca_mean: tuple[float, ...]  # (C,)
    pca_components: tuple[tuple[float, ...], ...]  # (K, C)
    pca_scale: tuple[float, ...]  # (K,) standard deviation of each projection on the training part
    coef: tuple[float, ...]  # (6 + S + K,)
    intercept: float
    threshold: float  # P(hard) at or above which a query goes to the cloud (the operating point)
    edge_model: str = ""  # the edge model whose early layers and answers the miner was trained on
    cloud_model: str = ""
    trained_on: int = 0  # training queries

    def __post_init__(self) -> None:
        expected = len(TASK_TYPE_COLUMNS) + len(SCALAR_COLUMNS) + len(self.pca_components)
        if len(self.coef) != expected:
            raise MinerFileError(f"coef: {len(self.coef)} weights for {expected} features")
        if len(self.scalar_mean) != len(SCALAR_COLUMNS) or len(self.scalar_scale) != len(SCALAR_COLUMNS):
            raise MinerFileError("scalar_mean / scalar_scale must have one value per scalar feature")
        if not 0.0 <= self.threshold <= 1.0:
            raise MinerFileError(f"threshold {self.threshold} outside [0, 1]")

    def design(self, features: list[QueryFeatures]) -> np.ndarray:
        """(N, D) inputs of the linear model. Raises MinerFileError if the pooled width does not fit."""
        types, scalars, pooled = stack_features(features)
        parts = [types, (scalars - np.array(self.scalar_mean)) / np.array(self.scalar_scale)]
        if self.pca_components:
            components = np.array(self.pca_components)  # (K, C)
            if pooled.shape[1] != components.shape[1]:
                raise MinerFileError(f"pooled hidden states of width {pooled.shape[1]}, miner expects "
                                     f"{components.shape[1]} (trained on {self.edge_model or 'another model'})")
            parts.append((pooled - np.array(self.pca_mean)) @ components.T / np.array(self.pca_scale))
        return np.concatenate(parts, axis=1)

    def probability_hard(self, features: list[QueryFeatures]) -> np.ndarray:
        """(N,) P(the cloud answers better) per query."""
        logits = self.design(features) @ np.array(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def with_threshold(self, threshold: float) -> MinerModel:
        from dataclasses import replace

        return replace(self, threshold=threshold)

    def save(self, path: Path) -> None:
        body = {"format": MINER_FORMAT, **{name: getattr(self, name) for name in self.__dataclass_fields__}}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> MinerModel:
        """Raises MinerFileError naming the file for anything wrong with it."""
        try:
            body = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise MinerFileError(f"{path}: cannot read the miner ({error})") from None
        if not isinstance(body, dict) or body.pop("format", None) != MINER_FORMAT:
            raise MinerFileError(f"{path}: not a miner file of format {MINER_FORMAT}")
        try:
            return cls(**{name: _frozen(value) for name, value in body.items()})
        except TypeError as error:
            raise MinerFileError(f"{path}: {error}") from None


def _frozen(value: object) -> object:
    return tuple(_frozen(item) for item in value) if isinstance(value, list) else value
