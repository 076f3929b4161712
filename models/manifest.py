"""The manifest written next to every stored model: identity, shape and a sha256 per file."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.errors import CorruptModelError, ManifestError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_HASH_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileEntry:
    bytes: int  # size on disk
    sha256: str  # hex digest


@dataclass(frozen=True, slots=True)
class Manifest:
    id: str  # model id, also the directory name in the store
    architecture: str  # e.g. "LlamaForCausalLM"
    layers: int  # decoder layers present in this variant
    hidden_size: int  # width of the residual stream
    vocab_size: int  # tokenizer / LM head size
    parameters: int  # parameter count (tied embedding counted once)
    bytes: int  # sum of file bytes, manifest excluded
    dtype: str  # storage dtype: float32, bfloat16, int8, q4 or int8w
    variant: str  # fp32, bf16, int8, edge or tiny
    source: str  # where the weights came from
    exit_layers: tuple[int, ...] = ()  # layers with an exit head (after that many decoder layers)
    files: dict[str, FileEntry] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["exit_layers"] = list(self.exit_layers)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        """Parse a manifest. Raises ManifestError naming `where` on any malformed field."""
        try:
            data: dict[str, Any] = json.loads(text)
            files = {name: FileEntry(**entry) for name, entry in data.pop("files").items()}
            exit_layers = tuple(int(layer) for layer in data.pop("exit_layers", ()))
            manifest = cls(files=files, exit_layers=exit_layers, **data)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ManifestError(f"malformed manifest {where}: {error}") from error
        if manifest.format_version != FORMAT_VERSION:
            raise ManifestError(f"manifest {where} has format_version {manifest.format_version}, want {FORMAT_VERSION}")
        return manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path) -> dict[str, FileEntry]:
    """FileEntry for every regular file in `directory` except the manifest itself."""
    return {
        path.name: FileEntry(bytes=path.stat().st_size, sha256=sha256_file(path))
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != MANIFEST_NAME
    }


def check_files(manifest: Manifest, directory: Path, hash_files: bool) -> None:
    """Check every manifest file exists with the right size (and sha256 if `hash_files`).

    Raises CorruptModelError naming the first missing, truncated or tampered file.
    """
    for name, entry in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise CorruptModelError(manifest.id, name, f"is missing from {directory}")
        size = path.stat().st_size
        if size != entry.bytes:
            raise CorruptModelError(manifest.id, name, f"has {size} bytes, manifest says {entry.bytes}")
        if hash_files and sha256_file(path) != entry.sha256:
            raise CorruptModelError(manifest.id, name, "has a sha256 that does not match the manifest")
