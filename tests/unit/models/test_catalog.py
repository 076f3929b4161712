from __future__ import annotations

from pathlib import Path

import pytest

from models import catalog
from models.catalog import CatalogEntry, catalog_entry, prepare
from models.errors import CorruptModelError, UnknownModelError
from models.store import ModelStore, VariantSpec
from models.tiny import make_tiny_model
from models.tokenizer import write_committed_tokenizer

TINY_CATALOG = (
    CatalogEntry("base", VariantSpec("fp32", "float32"), "tiny base"),
    CatalogEntry("base-int8", VariantSpec("int8", "int8"), "tiny int8"),
)


@pytest.fixture
def tiny_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The real prepare() over a two-entry catalog whose base comes from a tiny model, not the GGUF."""
    builds: list[str] = []

    def build_tiny_base(store: ModelStore, base: CatalogEntry) -> None:
        builds.append(base.model_id)
        tokenizer_dir = tmp_path / "tok"
        tokenizer_dir.mkdir(exist_ok=True)
        write_committed_tokenizer(tokenizer_dir)
        catalog.build_entry(store, base, make_tiny_model(seed=1), tokenizer_dir)

    monkeypatch.setattr(catalog, "CATALOG", TINY_CATALOG)
    monkeypatch.setattr(catalog, "_build_base", build_tiny_base)
    monkeypatch.setattr(catalog, "COMMITTED_HEADS", tmp_path / "no-heads.safetensors")
    return builds


def test_prepare_builds_every_variant_then_does_nothing(tmp_path: Path, tiny_catalog: list[str]) -> None:
    store = ModelStore(tmp_path / "store")
    first = prepare(store)
    assert [m.id for m in first] == ["base", "base-int8"] and tiny_catalog == ["base"]
    second = prepare(store)
    assert second == first and tiny_catalog == ["base"]


def test_prepare_refuses_a_tampered_variant(tmp_path: Path, tiny_catalog: list[str]) -> None:
    store = ModelStore(tmp_path / "store")
    prepare(store)
    path = store.path("base-int8") / "config.json"
    path.write_text(path.read_text().replace("silu", "gelu"))
    with pytest.raises(CorruptModelError, match="config.json"):
        prepare(store)


def test_prepare_repair_rebuilds_a_damaged_variant(tmp_path: Path, tiny_catalog: list[str]) -> None:
    store = ModelStore(tmp_path / "store")
    prepare(store)
    (store.path("base-int8") / "model.safetensors").unlink()
    prepare(store, repair=True)
    assert store.verify("base-int8").id == "base-int8" and tiny_catalog == ["base"]


def test_catalog_lists_real_variants() -> None:
    variants = {entry.spec.variant for entry in catalog.CATALOG}
    assert {"fp32", "bf16", "int8", "edge"} <= variants
    assert catalog_entry("smollm2-135m-edge20").spec.num_layers == 20


def test_unknown_catalog_id_raises() -> None:
    with pytest.raises(UnknownModelError):
        catalog_entry("gpt-5")
