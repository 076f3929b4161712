"""The edge node's per-task log, `llm_metrics.csv`: one row per task, safe to append across restarts.

On open, an existing file with the same header is appended to; a file with any other header is
renamed aside (`llm_metrics.<UTC time>.csv`) rather than mixed with rows of a different shape; a
last row torn by a crash is ended with a newline so the next row starts cleanly.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (
    "timestamp",
    "task_id",
    "task_type",
    "model",
    "status",
    "error",
    "queue_wait_s",
    "load_time_s",
    "ttft_s",
    "total_latency_s",
    "tokens",
    "tokens_per_s",
    "mean_exit_layer",
    "cpu_percent",
    "memory_percent",
    "load_avg_1m",
    "loaded_models",
)
LOADED_MODELS_SEPARATOR = ";"


class MetricsCsvError(Exception):
    """A metrics CSV row or file could not be read."""


@dataclass(frozen=True, slots=True)
class TaskMetricsRow:
    """One task's line in the log; None cells are written empty (e.g. no ttft for a failed task)."""

    timestamp: datetime  # timezone-aware; written as ISO 8601 UTC
    task_id: str
    task_type: str
    model: str
    status: str  # e.g. ok, error, expired, refused
    error: str = ""
    queue_wait_s: float | None = None
    load_time_s: float | None = None  # 0 when the model was already loaded
    ttft_s: float | None = None  # time to first token
    total_latency_s: float | None = None
    tokens: int = 0
    tokens_per_s: float | None = None
    mean_exit_layer: float | None = None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    load_avg_1m: float | None = None
    loaded_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")
        if any(LOADED_MODELS_SEPARATOR in model for model in self.loaded_models):
            raise ValueError(f"model ids in loaded_models must not contain {LOADED_MODELS_SEPARATOR!r}")


assert tuple(f.name for f in fields(TaskMetricsRow)) == COLUMNS, "row fields and CSV columns diverged"

_FLOAT_COLUMNS = frozenset(
    name
    for name in COLUMNS
    if name.endswith("_s") or name in {"mean_exit_layer", "cpu_percent", "memory_percent", "load_avg_1m"}
)


def _cell(name: str, value: object) -> str:
    if value is None:
        return ""
    if name == "timestamp":
        assert isinstance(value, datetime), "timestamp must be a datetime"
        return value.astimezone(UTC).isoformat()
    if name == "loaded_models":
        assert isinstance(value, tuple), "loaded_models must be a tuple"
        return LOADED_MODELS_SEPARATOR.join(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def row_to_cells(row: TaskMetricsRow) -> list[str]:
    """The CSV cells of `row`, in `COLUMNS` order."""
    return [_cell(name, getattr(row, name)) for name in COLUMNS]


def row_from_cells(cells: dict[str, str]) -> TaskMetricsRow:
    """Parse one CSV record (column → cell). Raises MetricsCsvError naming the bad column."""
    values: dict[str, object] = {}
    for name in COLUMNS:
        if name not in cells or cells[name] is None:
            raise MetricsCsvError(f"missing column {name!r}")
        text = cells[name]
        try:
            if name == "timestamp":
                values[name] = datetime.fromisoformat(text)
            elif name == "loaded_models":
                values[name] = tuple(text.split(LOADED_MODELS_SEPARATOR)) if text else ()
            elif name == "tokens":
                values[name] = int(text)
            elif name in _FLOAT_COLUMNS:
                values[name] = float(text) if text else None
            else:
                values[name] = text
        except ValueError as error:
            raise MetricsCsvError(f"column {name!r}: cannot parse {text!r}: {error}") from error
    try:
        return TaskMetricsRow(**values)  # type: ignore[arg-type]
    except ValueError as error:
        raise MetricsCsvError(str(error)) from error


def _header_line() -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(COLUMNS)
    return buffer.getvalue()


class MetricsCsvWriter:
    """Appends rows to a metrics CSV; thread-safe, each row flushed as it is written.

    Opening raises OSError if the file or its directory cannot be created or rotated.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._prepare_existing_file()
        self._file = self.path.open("a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        if self._file.tell() == 0:
            self._file.write(_header_line())
            self._file.flush()

    def _prepare_existing_file(self) -> None:
        """Keep a file with our header (ending a torn last row); rename any other file aside."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("r", encoding="utf-8", newline="", errors="replace") as existing:
            first_line = existing.readline()
        if first_line.rstrip("\r\n") == _header_line().rstrip("\r\n"):
            with self.path.open("rb+") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    existing.write(b"\r\n")
                    logger.warning("%s ended mid-row (crash?); the torn row was closed", self.path)
            return
        rotated = self._rotation_path()
        self.path.rename(rotated)
        logger.warning("%s had a different header; moved it to %s", self.path, rotated)

    def _rotation_path(self) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        candidate = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
        counter = 1
        while candidate.exists():
            candidate = self.path.with_name(f"{self.path.stem}.{stamp}-{counter}{self.path.suffix}")
            counter += 1
        return candidate

    def write(self, row: TaskMetricsRow) -> None:
        """Append one row and flush it. Raises ValueError if the writer is closed, OSError on I/O failure."""
        cells = row_to_cells(row)
        with self._lock:
            if self._file.closed:
                raise ValueError(f"metrics writer for {self.path} is closed")
            self._writer.writerow(cells)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> MetricsCsvWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def iter_rows(path: str | os.PathLike[str], *, skip_malformed: bool = False) -> Iterator[TaskMetricsRow]:
    """Rows of a metrics CSV written by `MetricsCsvWriter`.

    Raises MetricsCsvError naming the line for a wrong header or (unless `skip_malformed`) a bad row;
    OSError if the file cannot be read.
    """
    with Path(path).open("r", encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise MetricsCsvError(f"{path}: header {reader.fieldnames} is not {list(COLUMNS)}")
        for record in reader:
            try:
                if None in record:
                    raise MetricsCsvError(f"{len(record[None])} extra cell(s)")  # type: ignore[index]
                yield row_from_cells(record)
            except MetricsCsvError as error:
                if not skip_malformed:
                    raise MetricsCsvError(f"{path}, line {reader.line_num}: {error}") from error
                logger.warning("%s, line %d skipped: %s", path, reader.line_num, error)


def read_rows(path: str | os.PathLike[str], *, skip_malformed: bool = False) -> list[TaskMetricsRow]:
    """All rows of a metrics CSV; see `iter_rows` for what is raised."""
    return list(iter_rows(path, skip_malformed=skip_malformed))
