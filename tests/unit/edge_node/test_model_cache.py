"""The model cache: keep-alive, budget, LRU eviction, pins, in-use protection and shared loads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from edge_node.model_cache import (
    CacheConfig,
    CacheFullError,
    ModelCache,
    ModelLoadError,
    UnknownModelError,
)

from .conftest import FakeClock

MB = 2**20
THREAD_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class FakeModel:
    model_id: str
    size_bytes: int


@dataclass
class FakeStore:
    """Stands in for the model store: known sizes, recorded loads/unloads, optional gates and failures."""

    sizes: dict[str, int]
    loads: list[str] = field(default_factory=list)
    unloads: list[str] = field(default_factory=list)
    gate: threading.Event | None = None  # when set, loads block until the gate opens
    failures: dict[str, Exception] = field(default_factory=dict)
    load_started: threading.Event = field(default_factory=threading.Event)

    def load(self, model_id: str) -> FakeModel:
        self.loads.append(model_id)
        self.load_started.set()
        if self.gate is not None:
            assert self.gate.wait(THREAD_TIMEOUT_S), "test gate never opened"
        if model_id in self.failures:
            raise self.failures[model_id]
        return FakeModel(model_id, self.sizes[model_id])

    def unload(self, model: FakeModel) -> None:
        self.unloads.append(model.model_id)

    def estimate(self, model_id: str) -> int:
        return self.sizes[model_id]  # KeyError for an unknown model, as a manifest lookup would


def make_cache(store: FakeStore, clock: FakeClock, **config: float) -> ModelCache[FakeModel]:
    settings: dict[str, float] = {"memory_budget_bytes": 100 * MB, "wait_timeout_s": 0.05}
    settings.update(config)
    return ModelCache(
        store.load,
        lambda model: model.size_bytes,
        store.unload,
        clock,
        CacheConfig(**settings),  # type: ignore[arg-type]
        estimate_bytes=store.estimate,
    )


def use_once(cache: ModelCache[FakeModel], model_id: str, keep_alive_s: float | None = None) -> FakeModel:
    with cache.use(model_id, keep_alive_s=keep_alive_s) as model:
        return model


def loaded_ids(cache: ModelCache[FakeModel]) -> set[str]:
    return {record.model_id for record in cache.status()}


def run_in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run `target` in a thread; its return value or exception lands in the returned list."""
    outcome: list[object] = []

    def body() -> None:
        try:
            outcome.append(target())
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + THREAD_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.005)


# ---- loading and keep-alive -----------------------------------------------------------------------


def test_first_use_loads_the_model_and_second_use_reuses_it(clock: FakeClock) -> None:
    store = FakeStore({"a": 10 * MB})
    cache = make_cache(store, clock)
    assert use_once(cache, "a") is use_once(cache, "a")
    assert store.loads == ["a"]


def test_status_reports_size_times_and_expiry_of_an_idle_model(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 10 * MB}), clock, default_keep_alive_s=300)
    use_once(cache, "a")
    (record,) = cache.status()
    assert (record.model_id, record.size_bytes, record.loaded_at) == ("a", 10 * MB, clock.now)
    assert (record.expires_at, record.pinned, record.in_use, record.loading) == (
        clock.now + 300,
        False,
        0,
        False,
    )


def test_status_counts_requests_holding_the_model_and_has_no_expiry_while_held(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 10 * MB}), clock)
    with cache.use("a"), cache.use("a"):
        (record,) = cache.status()
    assert (record.in_use, record.expires_at) == (2, None)


def test_idle_model_is_unloaded_once_keep_alive_passes(clock: FakeClock) -> None:
    store = FakeStore({"a": 10 * MB})
    cache = make_cache(store, clock, default_keep_alive_s=300)
    use_once(cache, "a")
    clock.advance(299)
    assert cache.expire_idle() == []
    clock.advance(1)
    assert cache.expire_idle() == ["a"]
    assert (store.unloads, cache.status()) == (["a"], [])


def test_per_request_keep_alive_overrides_the_default(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 10 * MB}), clock, default_keep_alive_s=300)
    use_once(cache, "a", keep_alive_s=10)
    clock.advance(10)
    assert cache.expire_idle() == ["a"]


def test_keep_alive_zero_unloads_right_after_use(clock: FakeClock) -> None:
    store = FakeStore({"a": 10 * MB})
    cache = make_cache(store, clock)
    use_once(cache, "a", keep_alive_s=0)
    assert (store.unloads, cache.status()) == (["a"], [])


def test_keep_alive_zero_waits_for_the_last_holder(clock: FakeClock) -> None:
    store = FakeStore({"a": 10 * MB})
    cache = make_cache(store, clock)
    with cache.use("a"):
        use_once(cache, "a", keep_alive_s=0)
        assert store.unloads == []
    assert store.unloads == ["a"]


def test_negative_keep_alive_keeps_the_model_forever(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 10 * MB}), clock)
    use_once(cache, "a", keep_alive_s=-1)
    clock.advance(10**9)
    assert (cache.expire_idle(), cache.status()[0].expires_at) == ([], None)


def test_model_in_use_never_expires(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 10 * MB}), clock, default_keep_alive_s=1)
    with cache.use("a"):
        clock.advance(100)
        assert cache.expire_idle() == []


def test_next_expiry_is_the_earliest_keep_alive_deadline(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 10 * MB, "b": 10 * MB}), clock)
    use_once(cache, "a", keep_alive_s=50)
    use_once(cache, "b", keep_alive_s=20)
    assert cache.next_expiry() == clock.now + 20


# ---- pins -----------------------------------------------------------------------------------------


def test_pinned_model_does_not_expire(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 10 * MB}), clock, default_keep_alive_s=1)
    use_once(cache, "a")
    cache.pin("a")
    clock.advance(100)
    assert cache.expire_idle() == []
    assert cache.status()[0].pinned


def test_pin_before_loading_applies_once_the_model_loads(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 10 * MB}), clock, default_keep_alive_s=1)
    cache.pin("a")
    use_once(cache, "a")
    clock.advance(100)
    assert cache.expire_idle() == []


def test_unpinned_model_expires_after_keep_alive_from_the_unpin(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 10 * MB}), clock, default_keep_alive_s=30)
    cache.pin("a")
    use_once(cache, "a")
    clock.advance(100)
    cache.unpin("a")
    clock.advance(29)
    assert cache.expire_idle() == []
    clock.advance(1)
    assert cache.expire_idle() == ["a"]


def test_pinned_model_is_not_evicted_for_a_newcomer(clock: FakeClock) -> None:
    store = FakeStore({"pinned": 60 * MB, "idle": 30 * MB, "new": 30 * MB})
    cache = make_cache(store, clock)
    cache.pin("pinned")
    use_once(cache, "pinned")
    clock.advance(1)
    use_once(cache, "idle")
    clock.advance(1)
    use_once(cache, "new")
    assert loaded_ids(cache) == {"pinned", "new"}


# ---- budget and eviction --------------------------------------------------------------------------


def test_least_recently_used_idle_model_is_evicted_to_make_room(clock: FakeClock) -> None:
    store = FakeStore({"a": 40 * MB, "b": 40 * MB, "c": 40 * MB})
    cache = make_cache(store, clock)
    use_once(cache, "a")
    clock.advance(1)
    use_once(cache, "b")
    clock.advance(1)
    use_once(cache, "a")  # now "b" is the least recently used
    clock.advance(1)
    use_once(cache, "c")
    assert (store.unloads, loaded_ids(cache)) == (["b"], {"a", "c"})


def test_max_loaded_models_is_honoured(clock: FakeClock) -> None:
    store = FakeStore({"a": 1, "b": 1, "c": 1})
    cache = make_cache(store, clock, max_loaded_models=2)
    for model_id in ("a", "b", "c"):
        use_once(cache, model_id)
        clock.advance(1)
    assert loaded_ids(cache) == {"b", "c"}


def test_model_larger_than_the_budget_fails_at_once_with_the_reason(clock: FakeClock) -> None:
    store = FakeStore({"huge": 200 * MB})
    cache = make_cache(store, clock, wait_timeout_s=60)
    with pytest.raises(CacheFullError, match="budget"):
        use_once(cache, "huge")
    assert store.loads == []


def test_request_fails_with_cache_full_when_nothing_is_evictable_within_the_timeout(clock: FakeClock) -> None:
    store = FakeStore({"busy": 80 * MB, "new": 40 * MB})
    cache = make_cache(store, clock, wait_timeout_s=0.05)
    with cache.use("busy"), pytest.raises(CacheFullError, match="nothing evictable"):
        use_once(cache, "new")
    assert store.loads == ["busy"]


def test_waiting_request_proceeds_when_the_model_in_use_is_released(clock: FakeClock) -> None:
    store = FakeStore({"busy": 80 * MB, "new": 40 * MB})
    cache = make_cache(store, clock, wait_timeout_s=THREAD_TIMEOUT_S)
    with cache.use("busy"):
        thread, outcome = run_in_thread(lambda: use_once(cache, "new"))
        wait_until(lambda: cache.waiting_count == 1)
    thread.join(THREAD_TIMEOUT_S)
    assert outcome == [FakeModel("new", 40 * MB)]
    assert store.unloads == ["busy"]


def test_measured_size_replaces_the_estimate(clock: FakeClock) -> None:
    store = FakeStore({"a": 10 * MB})
    cache = ModelCache(
        store.load,
        lambda model: 12 * MB,
        store.unload,
        clock,
        CacheConfig(memory_budget_bytes=100 * MB),
        estimate_bytes=store.estimate,
    )
    use_once(cache, "a")
    assert cache.status()[0].size_bytes == 12 * MB


def test_evict_unloads_an_idle_model_now_even_if_pinned(clock: FakeClock) -> None:
    store = FakeStore({"a": 10 * MB})
    cache = make_cache(store, clock)
    cache.pin("a")
    use_once(cache, "a")
    assert cache.evict("a")
    assert (store.unloads, cache.status()) == (["a"], [])


def test_evict_of_a_model_in_use_unloads_it_on_release(clock: FakeClock) -> None:
    store = FakeStore({"a": 10 * MB})
    cache = make_cache(store, clock)
    with cache.use("a"):
        assert not cache.evict("a")
        assert store.unloads == []
    assert store.unloads == ["a"]


def test_unload_idle_keeps_pinned_and_busy_models(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 1, "b": 1, "c": 1}), clock)
    cache.pin("a")
    use_once(cache, "a")
    use_once(cache, "c")
    with cache.use("b"):
        assert cache.unload_idle() == ["c"]


def test_failing_unload_is_logged_and_the_model_still_leaves_the_cache(clock: FakeClock) -> None:
    store = FakeStore({"a": 10 * MB})

    def broken_unload(model: FakeModel) -> None:
        raise RuntimeError("driver error")

    cache = ModelCache(
        store.load,
        lambda m: m.size_bytes,
        broken_unload,
        clock,
        CacheConfig(memory_budget_bytes=100 * MB),
        estimate_bytes=store.estimate,
    )
    use_once(cache, "a", keep_alive_s=0)
    assert cache.status() == []


# ---- failures and shared loads --------------------------------------------------------------------


def test_unknown_model_raises_unknown_model_error(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({}), clock)
    with pytest.raises(UnknownModelError):
        use_once(cache, "missing")


def test_failed_load_raises_model_load_error_with_the_reason(clock: FakeClock) -> None:
    store = FakeStore({"bad": 10 * MB}, failures={"bad": OSError("checksum mismatch")})
    cache = make_cache(store, clock)
    with pytest.raises(ModelLoadError, match="checksum mismatch"):
        use_once(cache, "bad")


def test_failed_load_leaves_nothing_registered_and_other_models_still_load(clock: FakeClock) -> None:
    store = FakeStore({"bad": 60 * MB, "good": 60 * MB}, failures={"bad": MemoryError("out of memory")})
    cache = make_cache(store, clock)
    with pytest.raises(ModelLoadError):
        use_once(cache, "bad")
    assert cache.status() == []
    assert use_once(cache, "good") == FakeModel("good", 60 * MB)


def test_failed_load_is_retried_by_the_next_request(clock: FakeClock) -> None:
    store = FakeStore({"flaky": 10 * MB}, failures={"flaky": OSError("disk busy")})
    cache = make_cache(store, clock)
    with pytest.raises(ModelLoadError):
        use_once(cache, "flaky")
    del store.failures["flaky"]
    assert use_once(cache, "flaky") == FakeModel("flaky", 10 * MB)


def test_concurrent_requests_for_one_model_share_a_single_load(clock: FakeClock) -> None:
    store = FakeStore({"a": 10 * MB}, gate=threading.Event())
    cache = make_cache(store, clock)
    first, first_outcome = run_in_thread(lambda: use_once(cache, "a"))
    assert store.load_started.wait(THREAD_TIMEOUT_S)
    second, second_outcome = run_in_thread(lambda: use_once(cache, "a"))
    wait_until(lambda: cache.status()[0].in_use == 2)
    store.gate.set()
    first.join(THREAD_TIMEOUT_S)
    second.join(THREAD_TIMEOUT_S)
    assert store.loads == ["a"]
    assert first_outcome[0] is second_outcome[0]


def test_a_failed_shared_load_raises_the_same_reason_to_every_waiter(clock: FakeClock) -> None:
    store = FakeStore({"bad": 10 * MB}, gate=threading.Event(), failures={"bad": OSError("file missing")})
    cache = make_cache(store, clock)
    first, first_outcome = run_in_thread(lambda: use_once(cache, "bad"))
    assert store.load_started.wait(THREAD_TIMEOUT_S)
    second, second_outcome = run_in_thread(lambda: use_once(cache, "bad"))
    wait_until(lambda: cache.status()[0].in_use == 2)
    store.gate.set()
    first.join(THREAD_TIMEOUT_S)
    second.join(THREAD_TIMEOUT_S)
    errors = [first_outcome[0], second_outcome[0]]
    assert all(isinstance(error, ModelLoadError) for error in errors)
    assert {error.reason for error in errors} == {"OSError: file missing"}  # type: ignore[union-attr]
    assert (store.loads, cache.status()) == (["bad"], [])


def test_loading_model_appears_in_status_as_loading(clock: FakeClock) -> None:
    store = FakeStore({"a": 10 * MB}, gate=threading.Event())
    cache = make_cache(store, clock)
    thread, _ = run_in_thread(lambda: use_once(cache, "a"))
    assert store.load_started.wait(THREAD_TIMEOUT_S)
    (record,) = cache.status()
    store.gate.set()
    thread.join(THREAD_TIMEOUT_S)
    assert (record.loading, record.loaded_at, record.size_bytes) == (True, None, 10 * MB)


def test_config_rejects_a_zero_model_limit() -> None:
    with pytest.raises(ValueError, match="max_loaded_models"):
        CacheConfig(max_loaded_models=0)


def test_model_is_released_when_the_block_raises(clock: FakeClock) -> None:
    cache = make_cache(FakeStore({"a": 10 * MB}), clock)
    with pytest.raises(RuntimeError), cache.use("a"):
        raise RuntimeError("inference failed")
    assert cache.status()[0].in_use == 0


def test_victim_is_unloaded_before_the_newcomer_loads(clock: FakeClock) -> None:
    events: list[str] = []
    store = FakeStore({"old": 60 * MB, "new": 60 * MB})
    cache = ModelCache(
        lambda model_id: events.append(f"load {model_id}") or store.load(model_id),
        lambda model: model.size_bytes,
        lambda model: events.append(f"unload {model.model_id}"),
        clock,
        CacheConfig(memory_budget_bytes=100 * MB),
        estimate_bytes=store.estimate,
    )
    use_once(cache, "old")
    use_once(cache, "new")
    assert events == ["load old", "unload old", "load new"]


def test_budget_is_never_exceeded_under_concurrent_use(clock: FakeClock) -> None:
    sizes = {f"m{i}": (20 + 10 * (i % 4)) * MB for i in range(6)}
    store = FakeStore(sizes)
    resident: dict[str, int] = {}
    peaks: list[int] = []
    guard = threading.Lock()

    def load(model_id: str) -> FakeModel:
        with guard:
            resident[model_id] = sizes[model_id]
            peaks.append(sum(resident.values()))
        return store.load(model_id)

    def unload(model: FakeModel) -> None:
        with guard:
            del resident[model.model_id]

    cache = ModelCache(
        load,
        lambda m: m.size_bytes,
        unload,
        clock,
        CacheConfig(memory_budget_bytes=100 * MB, max_loaded_models=3, wait_timeout_s=THREAD_TIMEOUT_S),
        estimate_bytes=store.estimate,
    )

    def worker(offset: int) -> None:
        for step in range(40):
            with cache.use(f"m{(offset + step * 7) % 6}"):
                pass

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_S * 4)
    assert not any(thread.is_alive() for thread in threads), "a worker deadlocked"
    assert max(peaks) <= 100 * MB
    assert all(record.in_use == 0 for record in cache.status())
