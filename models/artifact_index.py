"""The model index a center serves and an edge reads to deploy a model: every file with size and sha256.

One format for both sides (the center's artifact server writes it, the edge's deployer parses it);
docs/deployment.md describes it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from urllib.parse import urljoin

from models.manifest import MANIFEST_NAME

INDEX_FORMAT_VERSION = 1
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")  # one path segment: no traversal, no hidden files


class IndexFormatError(ValueError):
    """An index is malformed or describes another model; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One file of a model as the index lists it."""

    name: str  # file name inside the model directory
    bytes: int  # exact size
    sha256: str  # hex digest the edge must see before installing
    url: str  # relative to the index URL as served; absolute once parsed by an edge


@dataclass(frozen=True, slots=True)
class ModelIndex:
    """Everything an edge needs to fetch and check one model version."""

    model_id: str
    model_version: str  # first 16 hex digits of the manifest's sha256: changes whenever any file does
    files: tuple[IndexEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.files)

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces) so the same store always gives the same sha256."""
        body = {
            "format_version": INDEX_FORMAT_VERSION,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "bytes": self.total_bytes,
            "files": [{"name": e.name, "bytes": e.bytes, "sha256": e.sha256, "url": e.url} for e in self.files],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


def parse_index(raw: bytes, index_url: str, model_id: str) -> ModelIndex:
    """Decode a served index, file URLs made absolute against `index_url`. Raises IndexFormatError."""
    try:
        data = json.loads(raw)
        files = tuple(
            IndexEntry(str(f["name"]), int(f["bytes"]), str(f["sha256"]), urljoin(index_url, str(f["url"])))
            for f in data["files"]
        )
        index = ModelIndex(str(data["model_id"]), str(data["model_version"]), files)
    except (ValueError, TypeError, KeyError) as error:
        raise IndexFormatError(f"malformed index at {index_url}: {error}") from error
    if index.model_id != model_id:
        raise IndexFormatError(f"index at {index_url} describes model {index.model_id!r}, not {model_id!r}")
    names = [entry.name for entry in files]
    if MANIFEST_NAME not in names or len(set(names)) != len(names):
        raise IndexFormatError(f"index at {index_url} must list {MANIFEST_NAME} and each file once")
    for entry in files:
        if not FILE_NAME.match(entry.name) or entry.bytes < 0 or len(entry.sha256) != 64:
            raise IndexFormatError(f"index at {index_url} has a bad entry {entry.name!r}")
    return index
