"""One direction of one proxied connection: read, schedule each chunk, hold it, write it when it departs.

The pump keeps at most `buffer_bytes` read but not yet written: when the buffer is full it stops
reading, the source's TCP window fills and the sender blocks, as behind a real slow link. Bytes are
written in the order they were read. At end of input it writes what it holds, then closes the
destination, which ends the other direction of the connection in turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from emulation.link_profiles import Direction, schedule_chunk

logger = logging.getLogger(__name__)


class LinkPump:
    """Moves bytes from `reader` to `writer` as the emulated `direction` would."""

    def __init__(self, name: str, direction: Direction, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 buffer_bytes: int, chunk_bytes: int) -> None:
        assert buffer_bytes >= chunk_bytes > 0, f"buffer_bytes {buffer_bytes} must be >= chunk_bytes {chunk_bytes} > 0"
        self.name = name
        self.direction = direction
        self.buffer_bytes = buffer_bytes
        self.chunk_bytes = chunk_bytes
        self.buffered_bytes = 0  # read, not yet handed to the destination
        self.peak_buffered_bytes = 0
        self.bytes_through = 0
        self._reader = reader
        self._writer = writer
        self._queue: deque[tuple[float, bytes]] = deque()  # (departure time on the loop clock, chunk)
        self._space = asyncio.Event()  # set when the writer frees buffer space
        self._queued = asyncio.Event()  # set when a chunk (or the end of input) was queued
        self._ended = False

    async def run(self) -> None:
        """Pump until the source ends and everything held was written; then close the destination."""
        reading = asyncio.ensure_future(self._read_loop())
        try:
            await self._write_loop()
        finally:
            reading.cancel()
            self._writer.close()

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        line_free_s = 0.0
        try:
            while True:
                while self.buffered_bytes >= self.buffer_bytes:
                    self._space.clear()
                    await self._space.wait()
                data = await self._reader.read(min(self.chunk_bytes, self.buffer_bytes - self.buffered_bytes))
                if not data:
                    break
                departure = schedule_chunk(self.direction, loop.time(), len(data), line_free_s)
                line_free_s = departure.line_free_s
                self._queue.append((departure.departure_s, data))
                self.buffered_bytes += len(data)
                self.peak_buffered_bytes = max(self.peak_buffered_bytes, self.buffered_bytes)
                self._queued.set()
        except (ConnectionError, OSError) as error:
            logger.debug("%s: source failed: %s", self.name, error)
        finally:
            self._ended = True
            self._queued.set()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._ended:
                    return
                self._queued.clear()
                await self._queued.wait()
                continue
            wait_s = self._queue[0][0] - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if self._writer.is_closing():  # the other direction ended the connection: nobody to write to
                return
            now = loop.time()
            while self._queue and self._queue[0][0] <= now:  # everything due leaves in one write
                _, data = self._queue.popleft()
                self._writer.write(data)
                self.buffered_bytes -= len(data)
                self.bytes_through += len(data)
            self._space.set()
            try:
                await self._writer.drain()  # the destination's backpressure reaches us here
            except (ConnectionError, OSError) as error:
                logger.debug("%s: destination failed: %s", self.name, error)
                return
