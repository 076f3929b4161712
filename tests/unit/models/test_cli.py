from __future__ import annotations

from pathlib import Path

import pytest

from models.cli import main
from models.tiny import write_tiny_model


def test_list_shows_catalog_and_stored_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tiny_model(tmp_path)
    assert main(["--store", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-int8" in out and "not prepared" in out and "tiny-llama" in out


def test_store_errors_exit_nonzero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import catalog
    from models.errors import SourceModelError

    def no_gguf(*_args: object) -> None:
        raise SourceModelError("GGUF file missing")

    monkeypatch.setattr(catalog, "_build_base", no_gguf)
    assert main(["--store", str(tmp_path), "prepare", "--base-only"]) == 1
