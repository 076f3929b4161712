"""The miner's feature vector: what the edge knows about a query before answering it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

NUM_TASK_TYPES = 5  # TC, NER, QA, TS, SG (the center's numbering); anything else is "other"
TASK_TYPE_COLUMNS = ("type_TC", "type_NER", "type_QA", "type_TS", "type_SG", "type_other")
SCALAR_COLUMNS = ("log_prompt_tokens", "entropy_mean", "entropy_last", "top_prob_mean", "top_prob_last",
                  "hidden_norm_mean")  # models.prompt_features.SCALAR_NAMES, kept equal by a test


@dataclass(frozen=True, slots=True)
class QueryFeatures:
    """One query's features: its type, the early-layer scalars and the pooled hidden state."""

    task_type: int  # 0..4, or -1 for a plain chat turn
    scalars: tuple[float, ...]  # SCALAR_COLUMNS order
    pooled_hidden: tuple[float, ...]  # (C,) mean of the probe layer's states; () when not measured

    def __post_init__(self) -> None:
        if len(self.scalars) != len(SCALAR_COLUMNS):
            raise ValueError(f"scalars: expected {len(SCALAR_COLUMNS)} values, got {len(self.scalars)}")
        if not all(np.isfinite(self.scalars)) or not all(np.isfinite(self.pooled_hidden)):
            raise ValueError("features must be finite")

    def type_one_hot(self) -> np.ndarray:
        row = np.zeros(len(TASK_TYPE_COLUMNS))
        row[self.task_type if 0 <= self.task_type < NUM_TASK_TYPES else NUM_TASK_TYPES] = 1.0
        return row

    def to_json(self) -> dict[str, object]:
        return {"task_type": self.task_type, "scalars": list(self.scalars), "pooled_hidden": list(self.pooled_hidden)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> QueryFeatures:
        """Raises ValueError (or KeyError / TypeError) for a malformed record."""
        return cls(int(data["task_type"]), tuple(float(x) for x in data["scalars"]),  # type: ignore[union-attr]
                   tuple(float(x) for x in data["pooled_hidden"]))  # type: ignore[union-attr]


def stack_features(features: Sequence[QueryFeatures]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(type one-hots (N, 6), scalars (N, S), pooled states (N, C)). Raises ValueError on unequal widths."""
    if not features:
        raise ValueError("no features to stack")
    widths = {len(item.pooled_hidden) for item in features}
    if len(widths) != 1:
        raise ValueError(f"pooled hidden states of unequal width: {sorted(widths)}")
    types = np.stack([item.type_one_hot() for item in features])
    scalars = np.array([item.scalars for item in features], dtype=float)
    pooled = np.array([item.pooled_hidden for item in features], dtype=float).reshape(len(features), widths.pop())
    return types, scalars, pooled
