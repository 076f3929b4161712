"""The center's metric recorder: takes points from the bus and from in-process callers, writes them in batches.

Writing happens on one background thread. Callers (bus handlers, the round loop) only append to a
bounded buffer under a lock, so an InfluxDB that is down or slow never blocks them: while the
store fails, points wait in the buffer and the writer retries with exponential backoff; when the
buffer is full the oldest points are dropped and counted (`stats().dropped`). With `spool_dir`, every
point is also appended to a write-ahead spool on disk first (metrics/spool.py), so points buffered while
the store is down survive a crash of the center and are delivered by the next run.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from broker import topics
from broker.client import BusClient, Envelope
from broker.messages.metrics import MetricBatch, MetricPoint
from metrics.config import RecorderConfig
from metrics.errors import StoreError, StoreRejectedError
from metrics.spool import MetricSpool
from metrics.store import MetricStore, open_store

logger = logging.getLogger(__name__)

_DROP_LOG_INTERVAL_S = 10.0  # at most one "dropping points" warning per this long


@dataclass(frozen=True, slots=True)
class RecorderStats:
    """Counters for the center's heartbeat and log."""

    buffered: int  # points waiting to be written
    written: int  # points the store accepted
    dropped: int  # points lost because the buffer was full
    rejected: int  # points the store refused (bad data); not retried
    foreign: int  # points from a batch whose node id did not match its topic; not recorded
    write_errors: int  # failed write attempts (each is retried unless rejected)
    store_ok: bool  # did the last write attempt succeed?
    last_error: str  # the last write failure, empty if none yet


class MetricRecorder:
    """Buffers points and writes them to a MetricStore on a background thread.

    `start()` launches the writer, `record(points)` never blocks, `attach(bus)` subscribes to
    `metrics/+`, `stop()` writes what it can within `stop_flush_s` and ends the thread.
    """

    def __init__(self, config: RecorderConfig, store: MetricStore | None = None) -> None:
        self.config = config
        self.store = store if store is not None else open_store(config.store)
        self._buffer: collections.deque[MetricPoint] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metric-recorder", daemon=True)
        self._written = 0
        self._dropped = 0
        self._rejected = 0
        self._foreign = 0
        self._write_errors = 0
        self._store_ok = True
        self._last_error = ""
        self._last_drop_log = 0.0
        self._spool = MetricSpool(config.spool_dir) if config.spool_dir else None
        if self._spool is not None:
            self._buffer.extend(self._spool.recover())  # an earlier run's undelivered points go first

    # ---- callers ---------------------------------------------------------------------------------

    def record(self, points: Iterable[MetricPoint]) -> None:
        """Queue points for writing. Never blocks on the store; drops the oldest points if the buffer is full."""
        points = list(points)
        with self._lock:
            self._spooled(lambda spool: spool.append(points))
            self._buffer.extend(points)
            overflow = len(self._buffer) - self.config.buffer_points
            for _ in range(max(0, overflow)):
                self._buffer.popleft()
            if overflow > 0:
                self._dropped += overflow
                self._spooled(lambda spool: spool.advance(overflow))
            full_batch = len(self._buffer) >= self.config.batch_points
        if overflow > 0:
            self._log_drop(overflow)
        if full_batch:
            self._wake.set()

    def attach(self, bus: BusClient, wait_s: float | None = None) -> None:
        """Record every MetricBatch published on `metrics/{node}` (the bus renews the subscription on reconnect).

        With `wait_s`, return once the broker confirmed the subscription (metrics are QoS 0: a batch
        published before that is not delivered)."""
        bus.subscribe(topics.METRICS, self._on_batch, wait_s=wait_s)

    def _on_batch(self, envelope: Envelope) -> None:
        batch = envelope.message
        assert isinstance(batch, MetricBatch), f"metrics topic carried {type(batch).__name__}"
        topic_node = envelope.params.get("node", "")
        if batch.node_id != topic_node:
            # The broker's ACL lets a node publish only under its own id; a batch naming another node is a bug.
            with self._lock:
                self._foreign += len(batch.points)
            logger.warning("metrics batch on %s claims node %s: ignored", envelope.topic, batch.node_id)
            return
        self.record(batch.points)

    def stats(self) -> RecorderStats:
        with self._lock:
            return RecorderStats(
                buffered=len(self._buffer), written=self._written, dropped=self._dropped, rejected=self._rejected,
                foreign=self._foreign, write_errors=self._write_errors, store_ok=self._store_ok, last_error=self._last_error,
            )

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MetricRecorder:
        self._thread.start()
        return self

    def stop(self) -> RecorderStats:
        """Write what is buffered (for at most `stop_flush_s`), stop the writer, close the store."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self.config.stop_flush_s + self.config.store.timeout_s + 1.0)
        self.store.close()
        if self._spool is not None:
            self._spool.close()
        stats = self.stats()
        if stats.buffered:
            logger.warning("recorder stopped with %d points unwritten (store: %s)", stats.buffered, stats.last_error or "ok")
        return stats

    def __enter__(self) -> MetricRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- writer thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        retry_s = self.config.retry_min_s
        flush_deadline: float | None = None
        while True:
            if self._stopping.is_set():
                if flush_deadline is None:
                    flush_deadline = time.monotonic() + self.config.stop_flush_s
                if not self._pending() or time.monotonic() >= flush_deadline:
                    return
            else:
                self._wake.wait(self.config.flush_interval_s)
                self._wake.clear()
            while self._pending():
                if self._write_one_batch():
                    retry_s = self.config.retry_min_s
                    continue
                # Store down or slow: back off; stop() cuts a normal backoff short, and while
                # stopping the flush deadline bounds it.
                if flush_deadline is None:
                    self._stopping.wait(retry_s)
                else:
                    time.sleep(min(retry_s, self._time_left(flush_deadline)))
                retry_s = min(retry_s * 2, self.config.retry_max_s)
                break

    def _pending(self) -> bool:
        with self._lock:
            return bool(self._buffer)

    @staticmethod
    def _time_left(deadline: float | None) -> float:
        return float("inf") if deadline is None else max(0.0, deadline - time.monotonic())

    def _write_one_batch(self) -> bool:
        """Write the oldest batch. True if written (or rejected for good); False if it must be retried."""
        with self._lock:
            batch = list(itertools.islice(self._buffer, self.config.batch_points))
        try:
            self.store.write(batch)
        except StoreRejectedError as error:
            logger.error("store rejected %d points, dropping them: %s", len(batch), error)
            self._remove(batch, written=False, error=str(error))
            return True
        except StoreError as error:
            with self._lock:
                was_ok, self._store_ok = self._store_ok, False
                self._write_errors += 1
                self._last_error = str(error)
                buffered = len(self._buffer)
            if was_ok:
                logger.warning("metric store unavailable, buffering (%d points waiting): %s", buffered, error)
            return False
        except Exception as error:  # a bug in encoding or a client library must not end the writer thread
            logger.exception("writing %d points failed unexpectedly, dropping them", len(batch))
            self._remove(batch, written=False, error=f"{type(error).__name__}: {error}")
            return True
        self._remove(batch, written=True, error="")
        return True

    def _remove(self, batch: list[MetricPoint], *, written: bool, error: str) -> None:
        """Take a finished batch off the buffer's head; points dropped meanwhile may have taken some already."""
        with self._lock:
            # The batch was the buffer's head; overflow drops only ever pop from the head too, so the
            # batch's survivors are exactly the buffer's first items that are still the same objects.
            remaining = 0
            for point in batch:
                if remaining < len(self._buffer) and self._buffer[remaining] is point:
                    remaining += 1
            for _ in range(remaining):
                self._buffer.popleft()
            self._spooled(lambda spool: spool.advance(remaining))
            # Points that overflowed while in flight were written (or rejected) after all: not dropped.
            self._dropped -= len(batch) - remaining
            if written:
                self._written += len(batch)
                if not self._store_ok:
                    logger.info("metric store back; %d points still buffered", len(self._buffer))
                self._store_ok = True
            else:
                self._rejected += len(batch)
                self._last_error = error

    def _spooled(self, action: Callable[[MetricSpool], None]) -> None:
        """Apply `action` to the spool, if any; a disk error costs durability, never the caller. Lock held."""
        if self._spool is None:
            return
        try:
            action(self._spool)
        except OSError as error:
            logger.warning("metric spool %s: %s; points stay in memory only", self._spool.directory, error)

    def _log_drop(self, count: int) -> None:
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            logger.warning("metric buffer full (%d points): dropped the %d oldest, %d in total",
                           self.config.buffer_points, count, self.stats().dropped)
