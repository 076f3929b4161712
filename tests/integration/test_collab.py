"""Collaborative generation end to end: real Mosquitto, cloud workers and an edge client in this process, tiny model.

The tiny model's residual branches are scaled up so its greedy output varies from token to token
(a plain random-weight model repeats one token, which would make equalities below vacuous).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

from broker.client import BusClient
from broker.messages.inference import ContextChunk, TokenRequest
from cloud_node.config import CloudConfig
from cloud_node.service import CloudService
from edge_node.collab.agreement_budget import AgreementBudget, shifted_threshold
from edge_node.collab.config import CollabConfig
from edge_node.collab.generation import generate
from edge_node.collab.link import CloudUnavailableError, CollabClient, LinkCounters, LinkFaults
from models.exits.heads import ExitHeads
from models.store import ModelStore, VariantSpec, write_model
from models.tiny import make_varied_tiny_model
from tests.conftest import wait_until

MODEL_ID = "tiny-collab"
SPLIT, EXITS, NEW_TOKENS = 4, (2, 4), 16


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # shared 2-core machine: OpenMP threads spin when oversubscribed


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("collab-store")
    write_model(root, MODEL_ID, make_varied_tiny_model(seed=1, layers=6), VariantSpec(variant="tiny", storage_dtype="float32", source="test"),
                exit_heads=ExitHeads(64, EXITS))
    return root


@pytest.fixture(scope="module")
def model(store):
    return ModelStore(store).load(MODEL_ID)


@pytest.fixture(scope="module")
def prompt(model):
    return model.encode_chat("Write one sentence about the sea.")


def start_cloud(mosquitto, store, tmp_path, node_id="cloud-1", **changes):
    config = CloudConfig(node_id=node_id, bus=mosquitto.bus_config(), model_store=str(store),
                         state_dir=str(tmp_path / "state"), heartbeat_interval_s=0.5, janitor_interval_s=0.05)
    return CloudService(dataclasses.replace(config, **changes)).start()


@pytest.fixture
def cloud(mosquitto, store, tmp_path):
    service = start_cloud(mosquitto, store, tmp_path)
    yield service
    service.stop()


@pytest.fixture
def client(mosquitto):
    bus = BusClient("pi-01", mosquitto.bus_config("pi-01")).connect()
    yield CollabClient(bus, "pi-01")
    bus.close()


def config(mode="collaborative", threshold=0.5, **changes):
    settings = {"cloud_deadline_s": 5.0, "speculative_draft": "exits", **changes}  # the tiny heads draft: rollbacks run
    return CollabConfig(mode=mode, split_layer=SPLIT, exit_layers=EXITS, threshold=threshold, **settings)


def run(model, prompt, client, cfg, **kwargs):
    return generate(model, prompt, NEW_TOKENS, cfg, client, stop_at_eos=False, **kwargs)


def test_never_exiting_equals_cloud_only(cloud, client, model, prompt):
    collaborative = run(model, prompt, client, config(threshold=1.0))
    cloud_only = run(model, prompt, client, config("cloud_only"))
    assert collaborative.token_ids == cloud_only.token_ids == tuple(model.generate_greedy(prompt, NEW_TOKENS, stop_at_eos=False))
    assert len(set(cloud_only.token_ids)) > 3, "the test model must not repeat one token"
    assert all(t.decided_by == "cloud" for t in collaborative.tokens)
    assert collaborative.cloud_requests == NEW_TOKENS and not collaborative.fallback


def record_uploads(client, monkeypatch) -> list[object]:
    """Every message the client publishes towards the cloud from now on (the real publish goes ahead)."""
    sent: list[object] = []
    publish = client.publish_up

    def recording(session_id, message):
        sent.append(message)
        return publish(session_id, message)

    monkeypatch.setattr(client, "publish_up", recording)
    return sent


def test_token_requests_ride_in_the_chunk_with_their_rows(cloud, client, model, prompt, monkeypatch):
    sent = record_uploads(client, monkeypatch)
    collaborative = run(model, prompt, client, config(threshold=1.0))  # every token asks the cloud
    assert collaborative.token_ids == tuple(model.generate_greedy(prompt, NEW_TOKENS, stop_at_eos=False))
    chunks = [m for m in sent if isinstance(m, ContextChunk)]
    riding = [m for m in chunks if m.ask_request_id is not None]
    alone = [m for m in sent if isinstance(m, TokenRequest)]
    assert len(riding) + len(alone) >= NEW_TOKENS
    assert len(riding) >= NEW_TOKENS - 1 and len(alone) <= 1  # each new row goes up with the question it answers
    assert all(m.first_position <= m.ask_position < m.first_position + m.count for m in riding)


def test_always_exiting_equals_edge_only(cloud, client, model, prompt):
    collaborative = run(model, prompt, client, config(threshold=0.0))
    standalone = run(model, prompt, None, config("standalone", threshold=0.0))
    assert collaborative.token_ids == standalone.token_ids
    assert collaborative.cloud_requests == 0
    assert {t.exit_layer for t in collaborative.tokens} == {EXITS[0]}


def test_naive_split_equals_cloud_only_and_sends_far_more(cloud, client, model, prompt):
    naive = run(model, prompt, client, config("naive_split"))
    collaborative = run(model, prompt, client, config(threshold=1.0))
    assert naive.token_ids == collaborative.token_ids
    assert naive.bytes_up > 10 * collaborative.bytes_up


def test_lost_and_duplicated_chunks_are_harmless(cloud, client, model, prompt):
    faults = LinkFaults(drop=lambda seq: seq in (0, 3, 7), duplicate=lambda seq: seq % 2 == 1)
    collaborative = run(model, prompt, client, config(threshold=1.0, upload_chunk_positions=8), faults=faults)
    assert collaborative.token_ids == tuple(model.generate_greedy(prompt, NEW_TOKENS, stop_at_eos=False))
    assert collaborative.resends >= 1 and not collaborative.fallback


def test_cloud_restart_mid_session_reopens_and_reuploads(mosquitto, store, tmp_path, client, model, prompt):
    services = [start_cloud(mosquitto, store, tmp_path)]

    def restart_after_fourth(token):
        if token.position == len(prompt) + 3:
            services[0].stop()
            services[0] = start_cloud(mosquitto, store, tmp_path)

    try:
        collaborative = run(model, prompt, client, config(threshold=1.0), on_token=restart_after_fourth)
    finally:
        services[0].stop()
    assert collaborative.token_ids == tuple(model.generate_greedy(prompt, NEW_TOKENS, stop_at_eos=False))
    assert collaborative.reopens == 1 and not collaborative.fallback


def test_expired_session_is_reopened_and_reuploaded(mosquitto, store, tmp_path, client, model, prompt):
    service = start_cloud(mosquitto, store, tmp_path, session_ttl_s=0.3)

    def pause(token):
        if token.position == len(prompt) + 2:
            time.sleep(0.6)

    try:
        collaborative = run(model, prompt, client, config(threshold=1.0), on_token=pause)
        assert service.inference.contexts.expirations >= 1
    finally:
        service.stop()
    assert collaborative.token_ids == tuple(model.generate_greedy(prompt, NEW_TOKENS, stop_at_eos=False))
    assert collaborative.reopens >= 1


def test_silent_cloud_ends_in_local_finish(mosquitto, store, tmp_path, client, model, prompt):
    service = start_cloud(mosquitto, store, tmp_path)

    def kill_after_second(token):
        if token.position == len(prompt) + 1:
            service.inference.stop()
            service.presence.crash()

    collaborative = run(model, prompt, client, config(threshold=1.0, cloud_deadline_s=0.5), on_token=kill_after_second)
    assert collaborative.fallback and collaborative.fallback_position == len(prompt) + 2
    assert len(collaborative.token_ids) == NEW_TOKENS
    assert [t.decided_by for t in collaborative.tokens][:2] == ["cloud", "cloud"]
    assert all(t.decided_by == "fallback" for t in collaborative.tokens[2:])


def test_no_cloud_at_all_answers_standalone(client, model, prompt):
    collaborative = run(model, prompt, client, config(threshold=1.0, open_timeout_s=0.3))
    standalone = run(model, prompt, None, config("standalone", threshold=1.0))
    assert collaborative.fallback and collaborative.token_ids == standalone.token_ids


def test_two_workers_share_sessions(mosquitto, store, tmp_path, model, prompt):
    workers = [start_cloud(mosquitto, store, tmp_path, node_id) for node_id in ("cloud-1", "cloud-2")]
    edges = [BusClient(edge, mosquitto.bus_config(edge)).connect() for edge in ("pi-01", "pi-02")]
    expected = tuple(model.generate_greedy(prompt, NEW_TOKENS, stop_at_eos=False))
    results = []
    try:
        clients = [CollabClient(bus, bus.client_id) for bus in edges]

        def answer(collab_client):
            for _ in range(3):
                results.append(run(model, prompt, collab_client, config(threshold=1.0)))

        threads = [threading.Thread(target=answer, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for bus in edges:
            bus.close()
        for worker in workers:
            worker.stop()
    assert len(results) == 6
    assert all(result.token_ids == expected for result in results)
    assert {result.worker_id for result in results} == {"cloud-1", "cloud-2"}
    served = [worker.inference.counts["tokens_served"] for worker in workers]
    assert sum(served) == 6 * NEW_TOKENS and min(served) > 0


def test_heartbeat_carries_session_figures(cloud, client, model, prompt):
    run(model, prompt, client, config(threshold=1.0, session_close=False))
    assert wait_until(lambda: cloud.presence.heartbeat().counters.get("sessions") == 1.0, timeout_s=5)
    counters = cloud.presence.heartbeat().counters
    assert counters["session_bytes"] > 0 and counters["tokens_served"] == NEW_TOKENS


def test_bad_chunks_are_rejected_with_reasons_and_the_session_goes_on(cloud, client, model, prompt):
    import numpy as np

    from broker.messages.inference import ContextChunk

    session = client.open_session(MODEL_ID, SPLIT, model.hidden_size, timeout_s=5.0)
    try:
        hidden = model.hidden_size
        nan_rows = np.zeros((2, hidden), dtype="<f2")
        nan_rows[1, 3] = np.nan
        bad = [
            ContextChunk(session.session_id, 90, 0, 1, hidden // 2, bytes(hidden), "fp16", 0, session.worker_id),
            ContextChunk(session.session_id, 91, 0, 2, hidden, nan_rows.tobytes(), "fp16", 0, session.worker_id),
            ContextChunk(session.session_id, 92, 10_000, 1, hidden, bytes(2 * hidden), "fp16", 0, session.worker_id),
        ]
        for chunk in bad:
            client.publish_up(session.session_id, chunk)
        assert wait_until(lambda: len(session.counters.rejected) == 3, timeout_s=5)
        reasons = " | ".join(session.counters.rejected)
        assert "hidden_size" in reasons and "NaN" in reasons and "beyond the limit" in reasons
        with torch.no_grad():
            states = model.decoder_slice(0, SPLIT)(model.embedding_slice()(torch.tensor([prompt])))[0]
        session.add_rows(0, states.half().numpy())
        answer = session.ask(len(prompt) - 1, deadline_s=5.0, max_reopens=0)
        assert answer is not None and answer.token_id == model.generate_greedy(prompt, 1)[0]
        assert cloud.inference.counts["chunks_rejected"] == 3
    finally:
        session.close()


def test_cloud_tasks_and_sessions_share_one_copy_of_each_model(mosquitto, store, tmp_path, client, model, prompt):
    from broker.messages import TaskSpec

    service = start_cloud(mosquitto, store, tmp_path)
    loads = []
    original_load = service.models.store.load
    service.models.store.load = lambda model_id, *a, **k: loads.append(model_id) or original_load(model_id, *a, **k)
    try:
        result = service.tasks.run(TaskSpec(task_id="t-1", task_type="TC", prompt="I loved it.", model_id=MODEL_ID,
                                            max_new_tokens=4))
        collaborative = run(model, prompt, client, config(threshold=1.0))
    finally:
        service.stop()
    assert result.status == "ok" and {t.decided_by for t in result.tokens} == {"cloud"}
    assert result.queue_wait_s == 0.0  # run directly, not through the queue
    assert collaborative.cloud_requests == NEW_TOKENS
    assert loads == [MODEL_ID], "the task worker and the session contexts load a model once between them"


def test_a_cloud_only_request_that_cannot_run_is_refused_alone(cloud, mosquitto, client, model, prompt):
    other_bus = BusClient("pi-02", mosquitto.bus_config("pi-02")).connect()
    other = CollabClient(other_bus, "pi-02")
    outcomes: dict[str, object] = {}

    def ask(name, collab_client, prompt_ids, budget):
        try:
            outcomes[name] = collab_client.generate_cloud_only(MODEL_ID, prompt_ids, budget, timeout_s=10.0,
                                                               counters=LinkCounters(), stop_at_eos=False).token_ids
        except CloudUnavailableError as error:
            outcomes[name] = str(error)

    try:
        threads = [threading.Thread(target=ask, args=("good", client, prompt, NEW_TOKENS)),
                   threading.Thread(target=ask, args=("bad", other, [*prompt, model.vocab_size + 5], NEW_TOKENS))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ask("too long", other, prompt, 4096)
    finally:
        other_bus.close()
    assert outcomes["good"] == tuple(model.generate_greedy(prompt, NEW_TOKENS, stop_at_eos=False))
    assert "outside the vocabulary" in str(outcomes["bad"])
    assert "exceeds the limit" in str(outcomes["too long"])


class RecordingBudget(AgreementBudget):
    """The real budget, also keeping what it was told (exit scores, None for cloud tokens)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: list[float | None] = []

    def record(self, exit_score: float | None) -> None:
        self.recorded.append(exit_score)
        super().record(exit_score)


def test_the_agreement_budget_learns_from_every_token_and_its_shift_steers_the_exits(cloud, client, model, prompt):
    # Every token exits at the first head with threshold 0: the scores there (top probabilities) set the test's scale.
    always = RecordingBudget(target=0.9)
    run(model, prompt, client, config(threshold=0.0), budget=always)
    assert len(always.recorded) == NEW_TOKENS and all(0.0 < s <= 1.0 for s in always.recorded)  # type: ignore[operator]
    middle = sorted(always.recorded)[NEW_TOKENS // 2]  # type: ignore[type-var]
    exits = {}
    for shift in (-1.5, 1.5):  # a step too small to move it: the shift alone decides
        budget = RecordingBudget(target=0.9, step=1e-9, shift=shift)
        answer = run(model, prompt, client, config(threshold=middle), budget=budget)
        by = [t.decided_by for t in answer.tokens]
        assert [s is None for s in budget.recorded] == [b == "cloud" for b in by]  # one record per token, in order
        assert all(s >= shifted_threshold(middle, shift) for s in budget.recorded if s is not None)  # type: ignore[operator]
        exits[shift] = by.count("exit")
    assert exits[-1.5] > exits[1.5]
