"""The on-disk model store: one directory per model id with weights, tokenizer and manifest.json."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import ManifestError, ModelStoreError, UnknownModelError
from models.exits.heads import EXIT_HEADS_NAME, ExitHeads
from models.exits.policy import ExitPolicy
from models.loaded import LoadedModel
from models.manifest import MANIFEST_NAME, Manifest, check_files, describe_files
from models.tokenizer import copy_tokenizer, load_tokenizer, write_committed_tokenizer
from models.weights import load_llama, save_weights, storage_state_dict

logger = logging.getLogger(__name__)

EXIT_POLICY_NAME = "exit_policy.json"


@dataclass(frozen=True, slots=True)
class VariantSpec:
    variant: str  # fp32, bf16, int8, q4, int8w, edge or tiny
    storage_dtype: str = "float32"  # float32, bfloat16, int8, q4 or int8w
    num_layers: int | None = None  # keep only the first N decoder layers (None: all)
    source: str = "unknown"  # provenance written into the manifest
    max_abs_error: float | None = None  # q4 / int8w: refuse to write a weight re-encoded further off


class ModelStore:
    """A directory of prepared models. Reads never modify it; `write_model` adds to it."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, model_id: str) -> Path:
        return self.root / model_id

    def list(self) -> list[str]:
        """Ids of every model directory holding a manifest, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST_NAME).is_file())

    def has(self, model_id: str) -> bool:
        return (self.path(model_id) / MANIFEST_NAME).is_file()

    def manifest(self, model_id: str) -> Manifest:
        """Raises UnknownModelError if absent, ManifestError if unreadable."""
        path = self.path(model_id) / MANIFEST_NAME
        if not path.is_file():
            raise UnknownModelError(f"no model {model_id!r} in store {self.root} (have {self.list()})")
        manifest = Manifest.from_json(path.read_text(), str(path))
        if manifest.id != model_id:
            raise ManifestError(f"{path} names model {manifest.id!r}, expected {model_id!r}")
        return manifest

    def verify(self, model_id: str) -> Manifest:
        """Hash every file. Raises UnknownModelError, ManifestError or CorruptModelError (naming the file)."""
        manifest = self.manifest(model_id)
        check_files(manifest, self.path(model_id), hash_files=True)
        return manifest

    def load(self, model_id: str, verify: bool = False) -> LoadedModel:
        """Load weights, tokenizer, exit heads and policy. Sizes are always checked, sha256 if `verify`.

        Raises UnknownModelError, ManifestError or CorruptModelError.
        """
        started = time.perf_counter()
        manifest = self.manifest(model_id)
        directory = self.path(model_id)
        check_files(manifest, directory, hash_files=verify)
        try:
            model = load_llama(directory)
            tokenizer = load_tokenizer(directory)
        except (OSError, RuntimeError, ValueError) as error:
            raise ModelStoreError(f"model {model_id!r} failed to load from {directory}: {error}") from error
        heads = ExitHeads.load(directory / EXIT_HEADS_NAME) if (directory / EXIT_HEADS_NAME).is_file() else None
        policy = None
        if (directory / EXIT_POLICY_NAME).is_file():
            try:
                policy = ExitPolicy.from_json((directory / EXIT_POLICY_NAME).read_text())
            except ValueError as error:
                raise ManifestError(f"model {model_id!r}: bad {EXIT_POLICY_NAME}: {error}") from error
        loaded = LoadedModel(manifest, model, tokenizer, heads, policy)
        loaded.decode_lm_head()  # built now so load time and memory_bytes include it
        logger.info("loaded model %s in %.2f s", model_id, time.perf_counter() - started)
        return loaded


def write_model(root: Path | str, model_id: str, model: Any, spec: VariantSpec,
                exit_heads: ExitHeads | None = None, exit_policy: ExitPolicy | None = None,
                tokenizer_source: Path | None = None) -> Manifest:
    """Write `model` (a LlamaForCausalLM) into the store at `root` as `model_id`, replacing any old copy.

    The tokenizer is copied from `tokenizer_source` (a model directory) or, if None, from the
    committed SmolLM2 tokenizer. The directory appears atomically (written aside, then renamed).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{model_id}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_weights(model, staging, spec.storage_dtype, spec.num_layers, spec.max_abs_error)
    if tokenizer_source is None:
        write_committed_tokenizer(staging)
    else:
        copy_tokenizer(tokenizer_source, staging)
    exit_layers: tuple[int, ...] = ()
    if exit_heads is not None:
        exit_heads.save(staging / EXIT_HEADS_NAME)
        exit_layers = exit_heads.exit_layers
    if exit_policy is not None:
        (staging / EXIT_POLICY_NAME).write_text(exit_policy.to_json())
    state = storage_state_dict(model, spec.num_layers)
    files = describe_files(staging)
    config = model.config
    manifest = Manifest(
        id=model_id, architecture="LlamaForCausalLM",
        layers=spec.num_layers or int(config.num_hidden_layers), hidden_size=int(config.hidden_size),
        vocab_size=int(config.vocab_size), parameters=sum(t.numel() for t in state.values()),
        bytes=sum(entry.bytes for entry in files.values()), dtype=spec.storage_dtype, variant=spec.variant,
        source=spec.source, exit_layers=exit_layers, files=files,
    )
    (staging / MANIFEST_NAME).write_text(manifest.to_json())
    target = root / model_id
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    logger.info("wrote model %s (%d bytes) to %s", model_id, manifest.bytes, target)
    return manifest
