"""Fixtures: a temporary model store holding tiny random-weight Llamas."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.loaded import LoadedModel
from models.store import ModelStore
from models.tiny import TINY_MODEL_ID, write_tiny_model


@pytest.fixture
def tiny_store(tmp_path: Path) -> ModelStore:
    write_tiny_model(tmp_path, exit_layers=(1, 2))
    return ModelStore(tmp_path)


@pytest.fixture
def tiny_model(tiny_store: ModelStore) -> LoadedModel:
    return tiny_store.load(TINY_MODEL_ID)
