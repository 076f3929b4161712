"""Secret files: written once with mode 600, never overwritten by a second writer racing the first."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def write_private(path: Path, data: bytes) -> bool:
    """Create `path` (mode 600) holding `data`; False if it already existed (another process won the race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


def write_public(path: Path, data: bytes) -> None:
    """Write a public file (certificate, public key) atomically: readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
