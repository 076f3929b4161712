"""An Ollama-like cache of loaded models: keep-alive, memory budget, LRU eviction, pins, shared loads.

The cache is generic over what a "model" is: it calls `loader(model_id)` to load one, `size_of(model)`
to learn its real size, `unload(model)` to release it, and `estimate_bytes(model_id)` (for example from
the store's manifest) to decide, before loading, whether it fits. Which models to evict is decided by
the pure `edge_node.eviction_policy.choose_victims`; this module only applies its answer under a lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import psutil

from edge_node.eviction_policy import ModelRecord, choose_victims

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CacheError(Exception):
    """Root of every error raised by the model cache."""


class UnknownModelError(CacheError):
    """`estimate_bytes` does not know the model (it raised `LookupError`)."""

    def __init__(self, model_id: str) -> None:
        super().__init__(f"unknown model {model_id!r}")
        self.model_id = model_id


class ModelLoadError(CacheError):
    """Loading failed; every request that waited on the same load receives the same instance."""

    def __init__(self, model_id: str, reason: str) -> None:
        super().__init__(f"loading model {model_id!r} failed: {reason}")
        self.model_id = model_id
        self.reason = reason


class CacheFullError(CacheError):
    """The model does not fit and nothing (more) can be evicted within the wait timeout."""

    def __init__(self, model_id: str, reason: str) -> None:
        super().__init__(f"no room for model {model_id!r}: {reason}")
        self.model_id = model_id
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Cache limits; every field has a default."""

    default_keep_alive_s: float = 300.0  # seconds idle before unload; 0 = unload after use; < 0 = forever
    max_loaded_models: int = 3  # models resident (or loading) at once
    memory_budget_bytes: int | None = None  # bytes; None = default_memory_budget_bytes() at construction
    wait_timeout_s: float = 30.0  # seconds a request waits for an evictable model before CacheFullError
    load_wait_timeout_s: float = 600.0  # seconds a request waits for another request's load of the same model

    def __post_init__(self) -> None:
        if self.max_loaded_models < 1:
            raise ValueError(f"max_loaded_models must be >= 1, got {self.max_loaded_models}")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be > 0, got {self.memory_budget_bytes}")
        if self.wait_timeout_s < 0:
            raise ValueError(f"wait_timeout_s must be >= 0, got {self.wait_timeout_s}")
        if self.load_wait_timeout_s < 0:
            raise ValueError(f"load_wait_timeout_s must be >= 0, got {self.load_wait_timeout_s}")


def default_memory_budget_bytes(fraction: float = 0.6, reserve_bytes: int = 256 * 2**20) -> int:
    """A budget from the memory available now: `fraction` of it after keeping `reserve_bytes` free.

    Raises ValueError if `fraction` is not in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    available = psutil.virtual_memory().available
    return max(1, int((available - reserve_bytes) * fraction))


@dataclass(slots=True)
class _Entry(Generic[T]):
    """Mutable bookkeeping for one model; only touched under the cache's lock."""

    model_id: str
    size_bytes: int
    last_used_at: float
    keep_alive_s: float
    in_use: int = 1  # the request that reserved it counts from the start
    loading: bool = True
    model: T | None = None
    loaded_at: float | None = None
    expires_at: float | None = None
    error: ModelLoadError | None = None  # set when the load failed; waiters re-raise it


class ModelCache(Generic[T]):
    """Thread-safe cache of loaded models; see the module docstring for the callables it needs."""

    def __init__(
        self,
        loader: Callable[[str], T],
        size_of: Callable[[T], int],
        unload: Callable[[T], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        config: CacheConfig | None = None,
        *,
        estimate_bytes: Callable[[str], int],
    ) -> None:
        self._loader = loader
        self._size_of = size_of
        self._unload = unload
        self._clock = clock
        self._estimate_bytes = estimate_bytes
        self.config = config or CacheConfig()
        self.budget_bytes = self.config.memory_budget_bytes or default_memory_budget_bytes()
        self._entries: dict[str, _Entry[T]] = {}
        self._pinned: set[str] = set()
        # Deregistered models whose unload has not finished still occupy memory: the policy counts them.
        self._unloading: dict[int, _Entry[T]] = {}
        self._waiting = 0
        # One condition for every state change: loads finishing, releases, unpins, unloads.
        self._condition = threading.Condition()

    # ---- requests -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def use(self, model_id: str, keep_alive_s: float | None = None) -> Iterator[T]:
        """Hold `model_id` loaded (loading it if needed) for the duration of the `with` block.

        `keep_alive_s` overrides the default for this model from now on (0 = unload once released,
        negative = keep forever). Raises UnknownModelError, ModelLoadError, CacheFullError.
        """
        keep_alive = self.config.default_keep_alive_s if keep_alive_s is None else keep_alive_s
        entry = self._acquire(model_id, keep_alive)
        try:
            assert entry.model is not None, f"model {model_id!r} acquired without being loaded"
            yield entry.model
        finally:
            self._release(entry)

    def _acquire(self, model_id: str, keep_alive_s: float) -> _Entry[T]:
        """Register one user of `model_id`, loading it unless another request already is; returns its entry."""
        estimate: int | None = None
        while True:
            with self._condition:
                entry = self._entries.get(model_id)
                if entry is not None:
                    return self._join(entry, keep_alive_s)
                if estimate is not None:
                    reserved = self._reserve(model_id, estimate, keep_alive_s)
                    if reserved is not None:
                        break
                    continue  # another request registered the same model while this one waited
            # The estimate may read a manifest from disk, so it runs outside the lock; then re-check.
            estimate = self._estimate(model_id)
        entry, evicted = reserved
        self._unload_entries(evicted, reason=f"making room for {model_id}")
        return self._load(entry)

    def _join(self, entry: _Entry[T], keep_alive_s: float) -> _Entry[T]:
        """Under the lock: one more user of a registered model; waits while another request loads it."""
        entry.in_use += 1
        entry.keep_alive_s = keep_alive_s
        entry.last_used_at = self._clock()
        entry.expires_at = None
        if not entry.loading:
            return entry
        finished = self._condition.wait_for(
            lambda: not entry.loading, timeout=self.config.load_wait_timeout_s
        )
        if entry.error is not None:
            # A fresh instance per waiter: one exception object raised in several threads shares a traceback.
            raise ModelLoadError(entry.model_id, entry.error.reason) from entry.error.__cause__
        if not finished:
            entry.in_use -= 1
            raise ModelLoadError(
                entry.model_id, f"still loading after {self.config.load_wait_timeout_s}s of waiting"
            )
        return entry

    def _estimate(self, model_id: str) -> int:
        try:
            estimate = int(self._estimate_bytes(model_id))
        except LookupError as error:
            raise UnknownModelError(model_id) from error
        except Exception as error:
            raise ModelLoadError(model_id, f"size estimate failed: {error!r}") from error
        if estimate < 0:
            raise ModelLoadError(model_id, f"size estimate is negative ({estimate} bytes)")
        return estimate

    def _reserve(
        self, model_id: str, needed_bytes: int, keep_alive_s: float
    ) -> tuple[_Entry[T], list[_Entry[T]]] | None:
        """Under the lock: evict what is needed (waiting, bounded, for idle models) and register a load.

        Returns the new entry and the evicted ones, or None if another request registered `model_id`
        meanwhile. Raises CacheFullError.
        """
        if needed_bytes > self.budget_bytes:
            raise CacheFullError(model_id, f"needs {needed_bytes} bytes, budget is {self.budget_bytes}")
        victims: tuple[str, ...] | None = None

        def ready() -> bool:
            nonlocal victims
            if model_id in self._entries:
                return True
            records = self._records() + self._unloading_records()
            victims = choose_victims(records, needed_bytes, self.budget_bytes, self.config.max_loaded_models)
            return victims is not None

        if not ready():
            logger.info(
                "model %s waits up to %.1fs for an evictable model", model_id, self.config.wait_timeout_s
            )
            self._waiting += 1
            try:
                self._condition.wait_for(ready, timeout=self.config.wait_timeout_s)
            finally:
                self._waiting -= 1
        if model_id in self._entries:
            return None
        if victims is None:
            raise CacheFullError(
                model_id,
                f"needs {needed_bytes} bytes; budget {self.budget_bytes} bytes and "
                f"max {self.config.max_loaded_models} models, nothing evictable "
                f"within {self.config.wait_timeout_s}s",
            )
        evicted = [self._deregister(self._entries[victim_id]) for victim_id in victims]
        entry: _Entry[T] = _Entry(
            model_id, needed_bytes, last_used_at=self._clock(), keep_alive_s=keep_alive_s
        )
        self._entries[model_id] = entry
        return entry, evicted

    def _load(self, entry: _Entry[T]) -> _Entry[T]:
        """Outside the lock: run the loader for a reserved entry, then publish the outcome to waiters."""
        started = self._clock()
        model: T | None = None
        try:
            model = self._loader(entry.model_id)
            size_bytes = int(self._size_of(model))
        except BaseException as error:
            if model is not None:  # loaded but unmeasurable: release it rather than leak it
                self._unload_entries([_Entry(entry.model_id, 0, 0.0, 0.0, model=model)], "size_of failed")
            failure = ModelLoadError(entry.model_id, f"{type(error).__name__}: {error}")
            failure.__cause__ = error  # set now: waiters may read it before this thread raises
            with self._condition:
                entry.error = failure
                entry.loading = False
                del self._entries[entry.model_id]  # nothing half-registered
                self._condition.notify_all()
            logger.warning("model %s failed to load: %s", entry.model_id, failure.reason)
            if not isinstance(error, Exception):
                raise  # KeyboardInterrupt and friends keep propagating as themselves
            raise failure from error
        with self._condition:
            entry.model = model
            entry.loading = False
            entry.loaded_at = self._clock()
            if size_bytes != entry.size_bytes:
                logger.info(
                    "model %s measured %d bytes, estimated %d", entry.model_id, size_bytes, entry.size_bytes
                )
            entry.size_bytes = size_bytes
            self._condition.notify_all()
        logger.info(
            "model %s loaded in %.2fs (%d bytes)", entry.model_id, entry.loaded_at - started, size_bytes
        )
        return entry

    def _release(self, entry: _Entry[T]) -> None:
        with self._condition:
            entry.in_use -= 1
            now = self._clock()
            entry.last_used_at = now
            unload_now = (
                entry.in_use == 0
                and entry.keep_alive_s == 0
                and entry.model_id not in self._pinned
                and self._entries.get(entry.model_id) is entry
            )
            if unload_now:
                self._deregister(entry)
            else:
                entry.expires_at = self._expiry(entry, now)
            self._condition.notify_all()
        if unload_now:
            self._unload_entries([entry], reason="keep-alive 0")

    def _expiry(self, entry: _Entry[T], now: float) -> float | None:
        if entry.in_use > 0 or entry.loading or entry.keep_alive_s < 0 or entry.model_id in self._pinned:
            return None
        return now + entry.keep_alive_s

    # ---- pins, expiry, status -------------------------------------------------------------------

    def pin(self, model_id: str) -> None:
        """Never evict or expire `model_id`; pinning a model not yet loaded takes effect when it loads."""
        with self._condition:
            self._pinned.add(model_id)
            entry = self._entries.get(model_id)
            if entry is not None:
                entry.expires_at = None

    def unpin(self, model_id: str) -> None:
        """Make `model_id` evictable again; its keep-alive counts from now. Unknown ids are ignored."""
        with self._condition:
            self._pinned.discard(model_id)
            entry = self._entries.get(model_id)
            if entry is not None:
                entry.expires_at = self._expiry(entry, self._clock())
            self._condition.notify_all()

    def expire_idle(self) -> list[str]:
        """Unload every idle model whose keep-alive has passed; returns their ids (call from a timer)."""
        with self._condition:
            now = self._clock()
            expired = [e for e in self._entries.values() if e.expires_at is not None and e.expires_at <= now]
            for entry in expired:
                self._deregister(entry)
            if expired:
                self._condition.notify_all()
        self._unload_entries(expired, reason="keep-alive passed")
        return [e.model_id for e in expired]

    def next_expiry(self) -> float | None:
        """The earliest `expires_at` among loaded models (cache clock), or None: when to call expire_idle."""
        with self._condition:
            times = [e.expires_at for e in self._entries.values() if e.expires_at is not None]
        return min(times, default=None)

    def unload_idle(self) -> list[str]:
        """Unload every idle, unpinned model now regardless of keep-alive (shutdown, drain); returns ids."""
        with self._condition:
            idle = [e for e in self._entries.values() if not e.loading and e.in_use == 0]
            idle = [e for e in idle if e.model_id not in self._pinned]
            for entry in idle:
                self._deregister(entry)
            if idle:
                self._condition.notify_all()
        self._unload_entries(idle, reason="unload requested")
        return [e.model_id for e in idle]

    def evict(self, model_id: str) -> bool:
        """Unpin `model_id` and unload it now if idle (True); if in use, unload it on release (False)."""
        with self._condition:
            self._pinned.discard(model_id)
            entry = self._entries.get(model_id)
            if entry is None:
                return False
            entry.keep_alive_s = 0
            if entry.loading or entry.in_use > 0:
                return False
            self._deregister(entry)
            self._condition.notify_all()
        self._unload_entries([entry], reason="evict requested")
        return True

    def status(self) -> list[ModelRecord]:
        """Every model loaded or loading, most recently used first."""
        with self._condition:
            records = self._records()
        return sorted(records, key=lambda r: (-r.last_used_at, r.model_id))

    @property
    def waiting_count(self) -> int:
        """Requests currently waiting for room in the cache."""
        with self._condition:
            return self._waiting

    def _records(self) -> list[ModelRecord]:
        return [
            ModelRecord(
                model_id=e.model_id,
                size_bytes=e.size_bytes,
                loaded_at=e.loaded_at,
                last_used_at=e.last_used_at,
                expires_at=e.expires_at,
                pinned=e.model_id in self._pinned,
                in_use=e.in_use,
                loading=e.loading,
            )
            for e in self._entries.values()
        ]

    def _deregister(self, entry: _Entry[T]) -> _Entry[T]:
        """Under the lock: remove a loaded model from service; it counts as unloading until released."""
        del self._entries[entry.model_id]
        self._unloading[id(entry)] = entry
        return entry

    def _unloading_records(self) -> list[ModelRecord]:
        return [
            ModelRecord(e.model_id, e.size_bytes, e.loaded_at, e.last_used_at, None, False, 0, False, True)
            for e in self._unloading.values()
        ]

    def _unload_entries(self, entries: Sequence[_Entry[T]], reason: str) -> None:
        """Outside the lock: call `unload` on deregistered models, then release their budget.

        A failing unload is logged, not raised; its memory is then assumed released.
        """
        for entry in entries:
            if self._unload is not None and entry.model is not None:
                try:
                    self._unload(entry.model)
                except Exception:
                    logger.exception("unloading model %s failed (%s)", entry.model_id, reason)
            with self._condition:
                self._unloading.pop(id(entry), None)
                self._condition.notify_all()
            logger.info("unloaded model %s (%s)", entry.model_id, reason)
