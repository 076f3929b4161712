from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from models.errors import CorruptModelError, ManifestError, ModelStoreError, UnknownModelError
from models.store import ModelStore
from models.tiny import TINY_MODEL_ID, write_tiny_model


def test_tiny_model_is_written_in_under_two_seconds(tmp_path: Path) -> None:
    started = time.perf_counter()
    write_tiny_model(tmp_path)
    assert time.perf_counter() - started < 2.0


def test_manifest_describes_the_model(tiny_store: ModelStore) -> None:
    manifest = tiny_store.manifest(TINY_MODEL_ID)
    assert manifest.id == TINY_MODEL_ID
    assert manifest.architecture == "LlamaForCausalLM"
    assert (manifest.layers, manifest.hidden_size, manifest.vocab_size) == (4, 64, 49152)
    assert manifest.exit_layers == (1, 2)
    assert {"model.safetensors", "config.json", "tokenizer.json", "exit_heads.safetensors"} <= set(manifest.files)
    assert manifest.bytes == sum(entry.bytes for entry in manifest.files.values())
    assert all(len(entry.sha256) == 64 for entry in manifest.files.values())
    assert manifest.parameters > 49152 * 64


def test_list_names_stored_models(tmp_path: Path) -> None:
    write_tiny_model(tmp_path, "b-model")
    write_tiny_model(tmp_path, "a-model", seed=1)
    assert ModelStore(tmp_path).list() == ["a-model", "b-model"]


def test_list_of_missing_root_is_empty(tmp_path: Path) -> None:
    assert ModelStore(tmp_path / "nothing").list() == []


def test_unknown_model_raises_unknown_model_error(tiny_store: ModelStore) -> None:
    with pytest.raises(UnknownModelError, match="no-such-model"):
        tiny_store.load("no-such-model")
    assert issubclass(UnknownModelError, ModelStoreError)


def test_verify_passes_on_intact_model(tiny_store: ModelStore) -> None:
    assert tiny_store.verify(TINY_MODEL_ID).id == TINY_MODEL_ID


def test_tampered_file_is_named_by_verify(tiny_store: ModelStore) -> None:
    path = tiny_store.path(TINY_MODEL_ID) / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="model.safetensors") as caught:
        tiny_store.verify(TINY_MODEL_ID)
    assert caught.value.file_name == "model.safetensors"


def test_tampered_file_is_refused_by_verified_load(tiny_store: ModelStore) -> None:
    path = tiny_store.path(TINY_MODEL_ID) / "tokenizer.json"
    path.write_text(path.read_text().replace("<|im_end|>", "<|im_eNd|>", 1))
    with pytest.raises(CorruptModelError, match="tokenizer.json"):
        tiny_store.load(TINY_MODEL_ID, verify=True)


def test_missing_file_is_named_by_load(tiny_store: ModelStore) -> None:
    (tiny_store.path(TINY_MODEL_ID) / "config.json").unlink()
    with pytest.raises(CorruptModelError, match="config.json.*missing"):
        tiny_store.load(TINY_MODEL_ID)


def test_truncated_file_is_named_by_load(tiny_store: ModelStore) -> None:
    path = tiny_store.path(TINY_MODEL_ID) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CorruptModelError, match="model.safetensors.*bytes"):
        tiny_store.load(TINY_MODEL_ID)


def test_malformed_manifest_raises_manifest_error(tiny_store: ModelStore) -> None:
    path = tiny_store.path(TINY_MODEL_ID) / "manifest.json"
    data = json.loads(path.read_text())
    del data["files"]
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="manifest"):
        tiny_store.manifest(TINY_MODEL_ID)


def test_loaded_model_exposes_config_tokenizer_and_memory(tiny_store: ModelStore) -> None:
    loaded = tiny_store.load(TINY_MODEL_ID)
    assert (loaded.num_layers, loaded.hidden_size, loaded.vocab_size) == (4, 64, 49152)
    assert loaded.memory_bytes() > 49152 * 64 * 4
    assert loaded.exit_heads is not None and loaded.exit_heads.exit_layers == (1, 2)
    ids = loaded.encode_chat("Translate into French: good morning")
    assert "good morning" in loaded.tokenizer.decode(ids)


def test_rewriting_a_model_replaces_it(tmp_path: Path) -> None:
    first = write_tiny_model(tmp_path, seed=0)
    second = write_tiny_model(tmp_path, seed=1)
    assert first.files["model.safetensors"].sha256 != second.files["model.safetensors"].sha256
    assert ModelStore(tmp_path).verify(TINY_MODEL_ID) == second
