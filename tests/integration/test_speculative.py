"""Speculative decoding end to end on the tiny model: real Mosquitto, a cloud worker, an edge client.

The drafts come from the tiny model's random exit heads, so most are rejected and the rollback
paths run on every round; threshold 0 lets every exit fire, threshold 1 drafts at the split layer.
"""

from __future__ import annotations

import pytest

from broker.messages.inference import ContextChunk, DraftVerify, hidden_bytes
from edge_node.collab.generation import generate
from tests.integration import test_collab
from tests.integration.test_collab import NEW_TOKENS, config, record_uploads, run, start_cloud

# The tiny model, its store, a cloud worker and an edge client: the collaborative tests' fixtures.
_one_thread, store, model, prompt, cloud, client = (test_collab._one_thread, test_collab.store, test_collab.model,
                                                    test_collab.prompt, test_collab.cloud, test_collab.client)


@pytest.mark.parametrize(("stop_unsure", "continue_probability"), [(True, 1.0), (True, 0.05), (False, 1.0)])
@pytest.mark.parametrize("threshold", [0.0, 1.0])
@pytest.mark.parametrize("gamma", [0, 1, 3])
def test_greedy_speculative_equals_cloud_only(cloud, client, model, prompt, threshold, gamma, stop_unsure,
                                              continue_probability):
    speculative = run(model, prompt, client, config("speculative", threshold=threshold, gamma=gamma,
                                                    draft_stop_unsure=stop_unsure,
                                                    draft_continue_probability=continue_probability))
    cloud_only = run(model, prompt, client, config("cloud_only"))
    assert speculative.token_ids == cloud_only.token_ids
    assert not speculative.fallback
    assert {t.decided_by for t in speculative.tokens} <= {"draft_accepted", "draft_corrected"}


def test_verifications_count_rounds_and_drafts(cloud, client, model, prompt):
    speculative = run(model, prompt, client, config("speculative", threshold=1.0, gamma=3, draft_stop_unsure=False))
    assert speculative.cloud_requests == len(speculative.gammas)
    assert max(speculative.gammas) == 3
    assert speculative.drafted == sum(speculative.gammas)
    by = [t.decided_by for t in speculative.tokens]
    assert by.count("draft_accepted") == speculative.accepted_drafts
    served = cloud.inference.counts
    assert served["drafts_verified"] == speculative.drafted and served["drafts_accepted"] == speculative.accepted_drafts


def test_greedy_verifications_ride_in_the_chunk_with_their_rows(cloud, client, model, prompt, monkeypatch):
    sent = record_uploads(client, monkeypatch)
    speculative = run(model, prompt, client, config("speculative", threshold=1.0, gamma=3, draft_stop_unsure=False,
                                                    draft_ahead=False))
    assert speculative.token_ids == run(model, prompt, client, config("cloud_only")).token_ids
    riding = [m for m in sent if isinstance(m, ContextChunk) and m.ask_drafts is not None]
    alone = [m for m in sent if isinstance(m, DraftVerify)]
    assert len(riding) + len(alone) == speculative.cloud_requests
    assert len(riding) >= speculative.cloud_requests - 1 and len(alone) <= 1  # each round's rows carry its drafts
    assert all(m.ask_position + len(m.ask_drafts) <= m.first_position + m.count for m in riding)
    assert sum(len(m.ask_drafts) for m in riding) + sum(len(m.draft_ids) for m in alone) == speculative.drafted


def test_int8_states_keep_speculative_output_and_save_a_byte_per_value(cloud, client, model, prompt, monkeypatch):
    sent = record_uploads(client, monkeypatch)
    fp16 = run(model, prompt, client, config("speculative", threshold=1.0, gamma=3, state_dtype="fp16"))
    fp16_chunks, sent[:] = [m for m in sent if isinstance(m, ContextChunk)], []
    int8 = run(model, prompt, client, config("speculative", threshold=1.0, gamma=3, state_dtype="int8"))
    int8_chunks = [m for m in sent if isinstance(m, ContextChunk)]
    assert int8.token_ids == fp16.token_ids
    # 2 B -> 1 B a value, plus the row's scales and outliers; how many rows and requests go up is timing
    # (drafts made ahead of a verdict), so the saving is counted per row sent
    per_row = {"fp16": 2 * model.hidden_size, "int8": hidden_bytes(1, model.hidden_size, "int8")}
    for chunks, dtype in ((fp16_chunks, "fp16"), (int8_chunks, "int8")):
        assert {c.dtype for c in chunks} == {dtype}
        assert sum(len(c.data) for c in chunks) == per_row[dtype] * sum(c.count for c in chunks)
    assert sum(c.count for c in int8_chunks) >= len(prompt) + NEW_TOKENS - 1  # every row but the last token's went up
    assert int8.bytes_up < fp16.bytes_up


def test_speculative_rows_travel_as_computed_unless_told_otherwise(cloud, client, model, prompt, monkeypatch):
    sent = record_uploads(client, monkeypatch)
    exact = run(model, prompt, client, config("speculative", threshold=1.0, gamma=3))
    chunks = [m for m in sent if isinstance(m, ContextChunk)]
    assert {c.dtype for c in chunks} == {"fp32"}
    assert sum(len(c.data) for c in chunks) == 4 * model.hidden_size * sum(c.count for c in chunks)
    assert exact.token_ids == run(model, prompt, client, config("cloud_only")).token_ids
    sent[:] = []
    run(model, prompt, client, config("collaborative", threshold=1.0))  # collaborative keeps fp16
    assert {m.dtype for m in sent if isinstance(m, ContextChunk)} == {"fp16"}


def test_a_sure_exit_drafts_on_and_an_unsure_draft_ends_the_round(cloud, client, model, prompt):
    always_sure = run(model, prompt, client, config("speculative", threshold=0.0, gamma=5))
    never_sure = run(model, prompt, client, config("speculative", threshold=1.0, gamma=5))
    assert max(always_sure.gammas) == 5 and set(never_sure.gammas) == {1}


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_drafting_ahead_over_a_slow_link_keeps_the_output(cloud, mosquitto, model, prompt, threshold):
    import dataclasses

    from broker.client import BusClient
    from edge_node.collab.link import CollabClient

    wan = dataclasses.replace(mosquitto.bus_config("pi-02"), link_profile="wan")  # 25 ms each way, emulated
    bus = BusClient("pi-02", wan).connect()
    try:
        collab_client = CollabClient(bus, "pi-02")
        ahead = run(model, prompt, collab_client, config("speculative", threshold=threshold, gamma=3))
        waiting = run(model, prompt, collab_client, config("speculative", threshold=threshold, gamma=3, draft_ahead=False))
        cloud_only = run(model, prompt, collab_client, config("cloud_only"))
    finally:
        bus.close()
    assert ahead.token_ids == waiting.token_ids == cloud_only.token_ids
    assert ahead.drafts_ahead > 0 and waiting.drafts_ahead == 0


def test_cloud_death_mid_answer_finishes_locally_with_marked_tokens(mosquitto, store, tmp_path, client, model, prompt):
    service = start_cloud(mosquitto, store, tmp_path)

    def kill_after_third(token):
        if token.position == len(prompt) + 2 and service.inference is not None:
            service.inference.stop()
            service.presence.crash()

    speculative = run(model, prompt, client, config("speculative", threshold=1.0, gamma=1, cloud_deadline_s=0.5),
                      on_token=kill_after_third)
    by = [t.decided_by for t in speculative.tokens]
    assert speculative.fallback and len(speculative.token_ids) == NEW_TOKENS
    assert speculative.fallback_position == len(prompt) + 3
    assert set(by[:3]) <= {"draft_accepted", "draft_corrected"} and set(by[3:]) == {"fallback"}


def test_no_cloud_at_all_answers_standalone(client, model, prompt):
    speculative = run(model, prompt, client, config("speculative", threshold=1.0, open_timeout_s=0.3))
    standalone = run(model, prompt, None, config("standalone", threshold=1.0))
    assert speculative.fallback and speculative.token_ids == standalone.token_ids


def test_concurrent_cloud_only_requests_run_batched_with_each_answer_its_own(mosquitto, store, tmp_path, model, prompt):
    from concurrent.futures import ThreadPoolExecutor

    from broker.client import BusClient
    from edge_node.collab.link import CollabClient

    service = start_cloud(mosquitto, store, tmp_path)
    buses = [BusClient(edge, mosquitto.bus_config(edge)).connect() for edge in ("pi-01", "pi-02", "pi-03")]
    prompts = [prompt, prompt[:-3], prompt[5:]]  # unequal lengths: left padding in the batch
    budgets = [NEW_TOKENS, 5, 9]
    try:
        clients = [CollabClient(bus, bus.client_id) for bus in buses]
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(
                lambda i: generate(model, prompts[i], budgets[i], config("cloud_only"), clients[i], stop_at_eos=False),
                range(3)))
        counts = service.inference.counts
    finally:
        for bus in buses:
            bus.close()
        service.stop()
    for answer, text, budget in zip(answers, prompts, budgets, strict=True):
        assert answer.token_ids == tuple(model.generate_greedy(text, budget, stop_at_eos=False))
    assert counts["generate_requests"] == 3 and counts["generate_batches"] < 3


def test_concurrent_sessions_share_forwards_and_each_answer_stays_its_own(mosquitto, store, tmp_path, model, prompt):
    """Speculative and collaborative sessions of three edges against one worker: their requests run as
    ragged forwards together, and every answer is still the one it gets alone."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from broker.client import BusClient
    from cloud_node.work_queue import Job
    from edge_node.collab.link import CollabClient

    service = start_cloud(mosquitto, store, tmp_path)
    buses = [BusClient(edge, mosquitto.bus_config(edge)).connect() for edge in ("pi-01", "pi-02", "pi-03")]
    prompts = [prompt, prompt[:-3], prompt[5:]]
    configs = [config("speculative", threshold=1.0, gamma=3), config("speculative", threshold=0.0, gamma=2),
               config("collaborative", threshold=1.0)]
    start = threading.Barrier(3)
    try:
        clients = [CollabClient(bus, bus.client_id) for bus in buses]

        def answer(i):
            start.wait()
            return generate(model, prompts[i], NEW_TOKENS, configs[i], clients[i], stop_at_eos=False)

        def hold_the_worker():
            # Three times mid-answer the worker's compute thread sleeps 0.3 s (a queued job), so the edges'
            # next requests are all queued when it takes work again: they must run as one forward.
            for served in (8, 20, 32):
                while service.inference.counts["tokens_served"] < served and not done.is_set():
                    time.sleep(0.002)
                service.inference._work.put(Job(run=lambda: time.sleep(0.3)))

        done = threading.Event()
        holder = threading.Thread(target=hold_the_worker, daemon=True)
        holder.start()
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(answer, range(3)))
        done.set()
        holder.join(5)
        counts = dict(service.inference.counts)
    finally:
        for bus in buses:
            bus.close()
        service.stop()
    for answer, text in zip(answers, prompts, strict=True):
        assert answer.token_ids == tuple(model.generate_greedy(text, NEW_TOKENS, stop_at_eos=False))
        assert not answer.fallback
    assert counts["session_requests_batched"] > 0, counts  # some requests did share a forward
    assert counts["session_forwards"] < sum(a.cloud_requests for a in answers)


def test_heartbeat_reports_cloud_cost_per_mode(cloud, client, model, prompt):
    run(model, prompt, client, config("speculative", threshold=0.0, gamma=3))
    run(model, prompt, client, config("cloud_only"))
    figures = cloud.inference.figures()
    assert figures["cost_cloud_only_tokens"] == NEW_TOKENS and figures["cost_speculative_tokens"] == NEW_TOKENS
    assert figures["cost_cloud_only_layer_passes"] == NEW_TOKENS * model.num_layers
    assert 0 < figures["cost_speculative_layer_passes"] < figures["cost_cloud_only_layer_passes"]
    assert figures["cost_speculative_cpu_ms"] > 0 and figures["cost_cloud_only_cpu_ms"] > 0


@pytest.fixture
def deeper_model(model):
    """The edge's model with one more head, at layer 5 (the tiny model has 6): a deeper drafting split."""
    import dataclasses

    import torch

    from models.exits.heads import ExitHeads

    extra = ExitHeads(model.hidden_size, (5,))
    with torch.no_grad():
        extra.adapter(5).proj.weight.normal_(0.0, 0.02)
    return dataclasses.replace(model, exit_heads=model.exit_heads.merged(extra))


def _opened_splits(client, monkeypatch) -> list[int]:
    splits: list[int] = []
    open_session = client.open_session

    def recording(model_id, split_layer, *args, **kwargs):
        splits.append(split_layer)
        return open_session(model_id, split_layer, *args, **kwargs)

    monkeypatch.setattr(client, "open_session", recording)
    return splits


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_a_deeper_drafting_split_keeps_the_cloud_only_answer(cloud, client, model, deeper_model, prompt, monkeypatch,
                                                             threshold):
    splits = _opened_splits(client, monkeypatch)
    deeper = run(deeper_model, prompt, client, config("speculative", threshold=threshold, speculative_split_layer=5))
    assert deeper.token_ids == run(model, prompt, client, config("cloud_only")).token_ids
    assert not deeper.fallback
    assert splits == [5]  # the cloud ran only layer 5's successor: [5, 6)
    # a model without a head there drafts at the collaborative split instead
    run(model, prompt, client, config("speculative", threshold=threshold, speculative_split_layer=5))
    assert splits == [5, 4]


def test_an_unsure_draft_of_a_split_head_without_an_exit_rule_ends_the_round(cloud, client, deeper_model, prompt):
    # exits never fire (threshold 1) and layer 5 has a head but no exit rule: its drafts are unsure,
    # so each round ends at its first draft unless their probabilities allow going on
    stopping = run(deeper_model, prompt, client, config("speculative", threshold=1.0, gamma=5,
                                                        speculative_split_layer=5, draft_ahead=False))
    going_on = run(deeper_model, prompt, client, config("speculative", threshold=1.0, gamma=5, speculative_split_layer=5,
                                                        draft_ahead=False, draft_continue_probability=0.0))
    assert set(stopping.gammas) == {1} and max(going_on.gammas) == 5
    assert stopping.token_ids == going_on.token_ids


def test_a_chosen_drafting_split_is_tried_then_learned_from_its_rounds(cloud, client, model, deeper_model, prompt,
                                                                       monkeypatch):
    from edge_node.collab.split_choice import SplitBook

    splits = _opened_splits(client, monkeypatch)
    book = SplitBook()
    auto = config("speculative", threshold=1.0, gamma=2, speculative_split_auto=True)
    chooser = book.for_answer(auto, deeper_model)
    assert chooser is not None and chooser.candidates == (4, 5)
    answers = [run(deeper_model, prompt, client, auto, splits=chooser) for _ in range(3)]
    cloud_only = run(model, prompt, client, config("cloud_only")).token_ids
    assert all(answer.token_ids == cloud_only and not answer.fallback for answer in answers)
    assert splits[:2] == [4, 5] and [a.draft_split for a in answers] == splits  # each split once, then the best
    assert set(chooser.records) == {4, 5}
    for split, record in chooser.records.items():
        # gamma 2 and every draft unsure (threshold 1): rounds of one or two tokens, at most two drafting
        # passes (fewer when drafts were made during the previous round's wait), each pass timed
        assert 0.0 < record.passes_per_round <= 2.0 and 1.0 <= record.tokens_per_round <= 3.0, split
        assert record.pass_ms > 0.0
    assert chooser.rtt_ms is not None and chooser.cloud_layer_ms is not None
    assert splits[2] == max((4, 5), key=chooser.rate)


def whole_model(**changes):
    """Speculative mode drafting with the whole model (layers [0, 6) and the final head), rows at layer 4."""
    return config("speculative", speculative_draft="model", **changes)


@pytest.mark.parametrize("ahead", [True, False])
def test_whole_model_drafts_are_the_cloud_only_answer_in_few_rounds(cloud, client, model, prompt, monkeypatch, ahead):
    sent = record_uploads(client, monkeypatch)
    drafted = run(model, prompt, client, whole_model(gamma=4, draft_ahead=ahead))
    cloud_only = run(model, prompt, client, config("cloud_only"))
    assert drafted.token_ids == cloud_only.token_ids
    # the first token is the cloud's (asked while the prompt's deeper layers ran), then the verifier agreed with every draft
    assert [t.decided_by for t in drafted.tokens] == ["cloud"] + ["draft_accepted"] * (NEW_TOKENS - 1)
    assert drafted.accepted_drafts == drafted.drafted == NEW_TOKENS - 1
    assert drafted.gammas == (4, 4, 4, 3) and drafted.cloud_requests == 1 + len(drafted.gammas)
    chunks = [m for m in sent if isinstance(m, ContextChunk)]
    # the rows still stream from the split layer: every position but the last token's, once each
    assert sum(c.count for c in chunks) == len(prompt) + NEW_TOKENS - 1
    assert {c.dtype for c in chunks} == {"fp32"}


def test_a_first_token_in_before_the_prompt_flush_leaves_its_deeper_rows_to_the_first_draft(cloud, client, model, prompt,
                                                                                          monkeypatch):
    import time

    from models.decoding import LayerStack

    flushed = LayerStack.flush
    stopped = []

    def flush_after_the_answer(stack, stop=None):  # as on a slow edge: the cloud's token is in before the flush runs
        deadline = time.monotonic() + 30.0
        while stop is not None and not stop() and time.monotonic() < deadline:
            time.sleep(0.005)
        arrived = flushed(stack, stop=stop)
        stopped.append(stop is not None and arrived is None)
        return arrived

    monkeypatch.setattr(LayerStack, "flush", flush_after_the_answer)
    drafted = run(model, prompt, client, whole_model(gamma=4))
    monkeypatch.undo()
    assert stopped[0], "the prompt's flush stopped with its rows still short of the last layer"
    assert drafted.tokens[0].decided_by == "cloud"
    assert drafted.token_ids == run(model, prompt, client, config("cloud_only")).token_ids
    assert drafted.accepted_drafts == drafted.drafted == NEW_TOKENS - 1  # the drafts saw the prompt's exact rows


def test_whole_model_drafting_grows_gamma_and_keeps_the_answer_over_a_slow_link(cloud, mosquitto, model, prompt):
    import dataclasses

    from broker.client import BusClient
    from edge_node.collab.link import CollabClient

    wan = dataclasses.replace(mosquitto.bus_config("pi-02"), link_profile="wan")
    bus = BusClient("pi-02", wan).connect()
    try:
        collab_client = CollabClient(bus, "pi-02")
        adaptive = run(model, prompt, collab_client, whole_model())
        exits = run(model, prompt, collab_client, config("speculative", threshold=0.5))
        cloud_only = run(model, prompt, collab_client, config("cloud_only"))
    finally:
        bus.close()
    assert adaptive.token_ids == exits.token_ids == cloud_only.token_ids
    assert adaptive.gammas[0] == 4 and max(adaptive.gammas) > 4  # every draft accepted: longer rounds
    assert adaptive.cloud_requests < exits.cloud_requests


def test_whole_model_fallback_keeps_the_full_models_answer(mosquitto, store, tmp_path, client, model, prompt):
    service = start_cloud(mosquitto, store, tmp_path)
    cloud_only = run(model, prompt, client, config("cloud_only"))

    def kill_after_second(token):
        if token.position == len(prompt) + 1 and service.inference is not None:
            service.inference.stop()
            service.presence.crash()

    drafted = run(model, prompt, client, whole_model(gamma=2, cloud_deadline_s=0.5), on_token=kill_after_second)
    by = [t.decided_by for t in drafted.tokens]
    assert drafted.fallback and drafted.fallback_position == len(prompt) + 3  # the round after the kill
    assert by[:3] == ["cloud", "draft_accepted", "draft_accepted"] and set(by[3:]) == {"fallback"}
    assert drafted.token_ids == cloud_only.token_ids  # the edge's whole model finishes as the cloud would have
    assert {t.layer for t in drafted.tokens[3:]} == {model.num_layers}



def test_int8_rows_let_whole_model_drafts_stand_within_the_tie_tolerance(cloud, client, model, prompt, monkeypatch):
    sent = record_uploads(client, monkeypatch)

    def tolerances() -> set[float]:
        riding = {m.ask_tie_tolerance for m in sent if isinstance(m, ContextChunk) and m.ask_drafts is not None}
        return riding | {m.tie_tolerance for m in sent if isinstance(m, DraftVerify)}

    int8 = run(model, prompt, client, whole_model(gamma=4, state_dtype="int8", int8_tie_tolerance=0.3))
    assert tolerances() == {0.3}
    assert int8.token_ids == run(model, prompt, client, config("cloud_only")).token_ids
    sent[:] = []
    run(model, prompt, client, whole_model(gamma=4))  # exact rows: the cloud's argmax decides
    run(model, prompt, client, config("speculative", threshold=1.0, gamma=3, state_dtype="int8"))  # exits drafting
    assert tolerances() == {0.0}
