"""A write-ahead spool on disk for metric points, so a crash or a long store outage loses none.

Every point the recorder accepts is appended to `points-<generation>.log` (a 4-byte length, then the
point's msgpack bytes) before it waits in memory; the recorder calls `advance(n)` whenever n points
leave the head of its buffer (written, rejected or dropped for space), and the spool records how far
it got in `offset` (generation and byte offset, replaced atomically). A restarted process `recover()`s
the points past that offset, in order. Appends reach the kernel at once (no fsync): a killed process
loses nothing, a power cut may lose the last moments. The spool is bounded by the recorder's buffer:
points dropped from memory for space are advanced past here too. A torn last record (killed mid-write)
is cut off on recovery. Once the consumed prefix is large, the live tail is copied into the next
generation's file and the old file deleted.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from pathlib import Path

from broker.errors import MessageError
from broker.messages.metrics import MetricPoint

logger = logging.getLogger(__name__)

_LENGTH = struct.Struct("<I")
COMPACT_BYTES = 8 * 1024 * 1024  # rewrite the file once this much of it has been consumed


class MetricSpool:
    """Append-only point log with a persisted read offset. Not thread-safe: the recorder holds its lock."""

    def __init__(self, directory: Path | str, compact_bytes: int = COMPACT_BYTES) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.compact_bytes = compact_bytes
        self.generation, self.offset = self._read_offset()
        self._sizes: deque[int] = deque()  # record sizes (with their length prefix) past the offset, in order
        self._file = None

    @property
    def path(self) -> Path:
        return self.directory / f"points-{self.generation}.log"

    def recover(self) -> list[MetricPoint]:
        """Points appended but not yet advanced past, oldest first; opens the spool for appending."""
        points: list[MetricPoint] = []
        good_end = self.offset
        if self.path.exists():
            data = self.path.read_bytes()
            position = self.offset
            while position + _LENGTH.size <= len(data):
                (length,) = _LENGTH.unpack_from(data, position)
                end = position + _LENGTH.size + length
                if end > len(data):
                    break  # torn write at the end
                try:
                    points.append(MetricPoint.from_bytes(data[position + _LENGTH.size : end]))
                except MessageError as error:  # not what we write: treat the rest as torn
                    logger.warning("spool %s: unreadable point at byte %d: %s", self.path, position, error)
                    break
                self._sizes.append(end - position)
                position = end
            good_end = position
            if good_end < len(data):
                logger.warning("spool %s: cut %d bytes of torn or unreadable records at its end", self.path,
                               len(data) - good_end)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the recorder's lifetime
        self._file.truncate(good_end)
        self._file.seek(good_end)
        if points:
            logger.info("spool %s: %d metric points from an earlier run to deliver", self.path, len(points))
        return points

    def append(self, points: list[MetricPoint]) -> None:
        """Write points at the end (to the kernel, not synced). Raises OSError (disk full: the caller decides)."""
        assert self._file is not None, "recover() opens the spool"
        chunks = [_LENGTH.pack(len(body)) + body for body in (point.to_bytes() for point in points)]
        self._file.write(b"".join(chunks))
        self._file.flush()
        self._sizes.extend(len(chunk) for chunk in chunks)  # only once they are in the file

    def advance(self, count: int) -> None:
        """The `count` oldest points are done with (written, rejected or dropped): persist the new offset."""
        for _ in range(min(count, len(self._sizes))):
            self.offset += self._sizes.popleft()
        if self.offset >= self.compact_bytes:
            self._compact()
        self._write_offset()

    def pending(self) -> int:
        return len(self._sizes)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # ---- files -----------------------------------------------------------------------------------

    def _compact(self) -> None:
        """Copy the live tail into the next generation's file; the offset file switches over atomically."""
        assert self._file is not None
        self._file.flush()
        old = self.path
        with old.open("rb") as source:
            source.seek(self.offset)
            tail = source.read()
        self._file.close()
        self.generation += 1
        self.path.write_bytes(tail)
        self.offset = 0
        self._write_offset()
        old.unlink(missing_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115

    def _read_offset(self) -> tuple[int, int]:
        try:
            generation, offset = (self.directory / "offset").read_text().split()
            return int(generation), int(offset)
        except (FileNotFoundError, ValueError):
            return 0, 0

    def _write_offset(self) -> None:
        temporary = self.directory / "offset.tmp"
        temporary.write_text(f"{self.generation} {self.offset}\n")
        os.replace(temporary, self.directory / "offset")
