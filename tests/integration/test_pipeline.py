"""Pipeline stages over real Mosquitto with a tiny random-weight model: exact output, moves, a stage dying."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from broker import topics
from broker.client import BusClient
from broker.messages.pipeline import StageAssign, StageFailed, StageStates
from models.store import ModelStore
from models.tiny import TINY_MODEL_ID, write_tiny_model
from pipeline.allocation import ModelShape, NodeCapability, llama_shape
from pipeline.coordinator import (
    CoordinatorConfig,
    PipelineCoordinator,
    PipelineError,
    PipelineRequest,
)
from pipeline.node import StageNode, start_stage_node
from pipeline.reallocation import ReallocationConfig
from tests.conftest import RunningBroker, wait_until

NODES = ("pi-01", "pi-02", "pi-03")
LAYERS = 6
PROMPT = (1, 504, 3300, 28, 1023, 30, 2)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    root = tmp_path_factory.mktemp("store")
    write_tiny_model(root, layers=LAYERS, hidden=64)
    return ModelStore(root)


@pytest.fixture
def stages(mosquitto: RunningBroker, store: ModelStore) -> Iterator[dict[str, StageNode]]:
    nodes = {node: start_stage_node(node, mosquitto.bus_config(), store) for node in NODES}
    yield nodes
    for node in nodes.values():
        node.stop()


@pytest.fixture
def center_bus(mosquitto: RunningBroker) -> Iterator[BusClient]:
    with BusClient("center", mosquitto.bus_config("center")) as bus:
        yield bus


def coordinator(bus: BusClient, store: ModelStore, **config: float) -> PipelineCoordinator:
    # the tiny model's head is worth ~70 of its layers: left out here so that splits differ by layers alone
    shape = ModelShape(LAYERS, llama_shape(LAYERS, 64, 170, 32, 49152).layer_bytes, 64 * 4, head_work=0.0)
    return PipelineCoordinator(bus, lambda model_id: shape, CoordinatorConfig(**config))


def single(store: ModelStore, count: int) -> list[int]:
    return store.load(TINY_MODEL_ID).generate_greedy(list(PROMPT), count, stop_at_eos=False)


def test_static_split_matches_the_single_process_model(stages, center_bus, store) -> None:
    result = coordinator(center_bus, store).run(
        PipelineRequest(TINY_MODEL_ID, NODES, PROMPT, 12, allocation=(3, 2, 1), reallocation=ReallocationConfig(enabled=False)))
    assert result.token_ids == single(store, 12)


def test_per_node_per_token_figures_cover_every_stage(stages, center_bus, store) -> None:
    result = coordinator(center_bus, store).run(
        PipelineRequest(TINY_MODEL_ID, NODES, PROMPT, 6, reallocation=ReallocationConfig(enabled=False)))
    assert set(result.tracker.summary()) == set(NODES)
    assert all(row["tokens"] == 5 for row in result.tracker.summary().values())  # the prompt pass is apart


# Tiny layers take ~0.1 ms, so a pass's fixed overhead dominates measured speeds; a small performance weight
# keeps the capabilities the request started with, and the move it implies, deterministic.
@pytest.mark.parametrize("kv_mode", ["transfer", "recompute"])
def test_moving_layers_mid_generation_keeps_the_output_exact(stages, center_bus, store, kv_mode: str) -> None:
    policy = ReallocationConfig(threshold=0.05, min_tokens=3, objective="throughput", performance_weight=0.01)
    result = coordinator(center_bus, store).run(
        PipelineRequest(TINY_MODEL_ID, NODES, PROMPT, 16, allocation=(4, 1, 1), reallocation=policy, kv_mode=kv_mode))  # type: ignore[arg-type]
    moves = [change for change in result.allocations if change.reason == "imbalance"]
    assert moves and moves[0].layers != (4, 1, 1)
    assert result.token_ids == single(store, 16)


def test_transfer_moves_keys_and_values_over_the_bus(stages, center_bus, store) -> None:
    policy = ReallocationConfig(threshold=0.05, min_tokens=3, objective="throughput", performance_weight=0.01)
    result = coordinator(center_bus, store).run(
        PipelineRequest(TINY_MODEL_ID, NODES, PROMPT, 14, allocation=(4, 1, 1), reallocation=policy))
    assert [change.kv_bytes > 0 for change in result.allocations if change.reason == "imbalance"][:1] == [True]


def test_a_dying_stage_hands_its_layers_to_the_others(stages, center_bus, store) -> None:
    coordinator_ = coordinator(center_bus, store, stall_timeout_s=20.0)
    killed = threading.Event()

    def kill_after_four(run_id: str, position: int, token_id: int, allocation: object) -> None:
        if position == len(PROMPT) + 4 and not killed.is_set():
            killed.set()
            stages["pi-02"].crash()

    coordinator_.on_token = kill_after_four
    result = coordinator_.run(PipelineRequest(TINY_MODEL_ID, NODES, PROMPT, 14, allocation=(2, 2, 2),
                                              reallocation=ReallocationConfig(enabled=False)))
    lost = [change for change in result.allocations if change.reason == "node_lost:pi-02"]
    assert lost and lost[0].node_ids == ("pi-01", "pi-03") and sum(lost[0].layers) == LAYERS
    assert result.token_ids == single(store, 14)


def test_losing_a_stage_nobody_can_replace_is_a_clear_error(stages, center_bus, store) -> None:
    coordinator_ = coordinator(center_bus, store, stall_timeout_s=20.0)
    coordinator_.on_token = lambda run_id, position, token, allocation: stages["pi-03"].crash() if position == len(PROMPT) + 2 else None
    tight = tuple(NodeCapability(node, 1000.0, 2 * llama_shape(LAYERS, 64, 170, 32, 49152).layer_bytes) for node in NODES)
    with pytest.raises(PipelineError, match="cannot host"):
        coordinator_.run(PipelineRequest(TINY_MODEL_ID, NODES, PROMPT, 10, capabilities=tight,
                                         reallocation=ReallocationConfig(enabled=False)))


def test_unknown_model_is_a_clear_error(stages, center_bus, store) -> None:
    with pytest.raises(PipelineError, match="cannot load no-such-model"):
        coordinator(center_bus, store, ready_timeout_s=10.0).run(PipelineRequest("no-such-model", NODES, PROMPT, 4))


def test_states_of_the_wrong_width_are_refused_and_the_stage_lives_on(stages, center_bus, store, mosquitto) -> None:
    failures: list[StageFailed] = []
    center_bus.subscribe(topics.PIPELINE_REPORT, lambda envelope: failures.append(envelope.message)
                         if isinstance(envelope.message, StageFailed) else None, wait_s=5.0, node="pi-02")
    center_bus.publish(topics.PIPELINE_CONTROL, StageAssign("r-bad", 1, TINY_MODEL_ID, 2, 4, "pi-01", "pi-03", False, False,
                                                            reset=True), node="pi-02")
    with BusClient("pi-01", mosquitto.bus_config("pi-01")) as pi01:
        pi01.publish(topics.PIPELINE_LINK, StageStates("r-bad", 1, 0, 1, 32, 2, bytes(128)), run="r-bad", source="pi-01",
                     target="pi-02")
        assert wait_until(lambda: failures, timeout_s=10.0)
    assert "width 32" in failures[0].reason
    result = coordinator(center_bus, store).run(
        PipelineRequest(TINY_MODEL_ID, NODES, PROMPT, 4, reallocation=ReallocationConfig(enabled=False)))
    assert result.token_ids == single(store, 4)


def test_a_stage_cannot_write_as_another(mosquitto, stages, center_bus, store) -> None:
    seen: list[object] = []
    center_bus.subscribe(topics.PIPELINE_LINK, lambda envelope: seen.append(envelope), wait_s=5.0)
    with BusClient("pi-01", mosquitto.bus_config("pi-01")) as pi01:
        pi01.publish(topics.PIPELINE_LINK, StageStates("r-x", 1, 0, 1, 64, 2, bytes(256)), run="r-x", source="pi-03",
                     target="pi-02", wait_s=5.0)
        pi01.publish(topics.PIPELINE_LINK, StageStates("r-x", 1, 0, 1, 64, 2, bytes(256)), run="r-x", source="pi-01",
                     target="pi-02", wait_s=5.0)
    assert wait_until(lambda: seen, timeout_s=5.0)
    assert [envelope.params["source"] for envelope in seen] == ["pi-01"]




@pytest.mark.slow
def test_real_model_over_three_stages_with_a_move_matches_the_single_process_model(mosquitto, center_bus) -> None:
    from models.catalog import BASE_MODEL_ID
    from models.paths import default_store_root
    from pipeline.shapes import shape_of_stored

    real_store = ModelStore(default_store_root())
    nodes = [start_stage_node(node, mosquitto.bus_config(), real_store) for node in NODES]
    try:
        shape = shape_of_stored(real_store, BASE_MODEL_ID)
        policy = ReallocationConfig(threshold=0.05, min_tokens=4, objective="throughput", performance_weight=0.01)
        model = real_store.load(BASE_MODEL_ID)
        prompt = tuple(model.encode_chat("Name three rivers in Europe."))
        result = PipelineCoordinator(center_bus, lambda model_id: shape, CoordinatorConfig(ready_timeout_s=120.0)).run(
            PipelineRequest(BASE_MODEL_ID, NODES, prompt, 24, allocation=(20, 5, 5), reallocation=policy))
        assert [change.reason for change in result.allocations][:2] == ["start", "imbalance"]
        assert result.token_ids == model.generate_greedy(list(prompt), 24, stop_at_eos=False)
    finally:
        for node in nodes:
            node.stop()
