"""Models the cloud worker serves, loaded from the store on first use and kept (a worker serves few models)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from models.errors import ModelStoreError
from models.loaded import LoadedModel
from models.paths import default_store_root
from models.store import ModelStore

logger = logging.getLogger(__name__)


class ModelPool:
    def __init__(self, store_root: str | Path = "") -> None:
        self.store = ModelStore(Path(store_root) if store_root else default_store_root())
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, model_id: str) -> LoadedModel:
        """The loaded model. Raises ModelStoreError (unknown, damaged) naming the model."""
        with self._lock:
            model = self._models.get(model_id)
            if model is None:
                model = self.store.load(model_id)
                self._models[model_id] = model
                logger.info("loaded %s (%d layers)", model_id, model.num_layers)
            return model

    def loaded(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._models)


__all__ = ["ModelPool", "ModelStoreError"]
