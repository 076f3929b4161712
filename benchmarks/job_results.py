"""The job's results file: one JSON line per finished cell, appended and synced as each cell ends.

A cell is in the file completely or not at all: the line is written in one call and fsynced, and a
line cut short by a kill is skipped on reading (that cell runs again), so a restarted job runs exactly
the cells without a complete line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def read_results(path: Path) -> list[dict]:
    """Every complete cell line, in file order (a repeated key is kept: the self-test counts repeats)."""
    if not path.exists():
        return []
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            logger.warning("%s:%d: incomplete line (a killed run) skipped; its cell runs again", path, number)
            continue
        if isinstance(line, dict) and "key" in line and "records" in line:
            lines.append(line)
    return lines


def append_cell(path: Path, line: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(line) + "\n").encode()
    with open(path, "ab") as results:
        if results.tell() and not _ends_with_newline(path):
            data = b"\n" + data  # after a line cut short, start a fresh one
        results.write(data)
        results.flush()
        os.fsync(results.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as results:
        results.seek(-1, os.SEEK_END)
        return results.read(1) == b"\n"


def first_by_key(lines: list[dict]) -> dict[str, dict]:
    cells: dict[str, dict] = {}
    for line in lines:
        cells.setdefault(line["key"], line)
    return cells
