"""A model's shape for the allocator, read from the store's config.json (no weights loaded) or a loaded model."""

from __future__ import annotations

import json
import logging
from typing import Any

from models.store import ModelStore
from pipeline.allocation import ModelShape, llama_shape

logger = logging.getLogger(__name__)


class UnknownShapeError(ValueError):
    """The store has no readable config for the model."""


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    kv_size = int(config.get("num_key_value_heads", heads)) * head_dim
    return llama_shape(int(config["num_hidden_layers"]), hidden, int(config["intermediate_size"]), kv_size,
                       int(config["vocab_size"]))


def shape_of_stored(store: ModelStore, model_id: str) -> ModelShape:
    """Raises UnknownShapeError when the model or its config is missing or unreadable."""
    path = store.path(model_id) / "config.json"
    try:
        return shape_from_config(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UnknownShapeError(f"no usable config for model {model_id!r} at {path}: {error}") from error


def shape_of_loaded(model: Any) -> ModelShape:
    """The shape of a `LoadedModel`."""
    return shape_from_config(model.config.to_dict())
