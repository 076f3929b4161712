"""The decoding core (LayerStack) and the one decode loop on tiny random-weight models, no broker."""

from __future__ import annotations

import pytest
import torch

from models.decode_loop import DECIDERS, LocalStepper, TokenDecision, decode
from models.decoding import LayerStack
from models.exits.policy import ExitPolicy
from models.generation import generate_batch
from models.loaded import LoadedModel
from models.reference import reference_greedy
from models.store import ModelStore, VariantSpec, write_model
from models.tiny import make_varied_tiny_model

LAYERS, EXITS = 6, (1, 2, 4)
PROMPTS = ("Write one sentence about the sea.", "What is DNA?", "List three colours.", "Translate: 你好")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> LoadedModel:
    """A tiny model whose residual branches are scaled up so greedy output varies from token to token."""
    from models.exits.heads import ExitHeads

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("decoding-store")
    write_model(root, "tiny-decoding", make_varied_tiny_model(seed=1, layers=LAYERS), VariantSpec(variant="tiny", storage_dtype="float32", source="test"),
                exit_heads=ExitHeads(64, EXITS))
    return ModelStore(root).load("tiny-decoding")


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> LoadedModel:
    """An unscaled tiny model (small activations), for comparisons at 1e-5."""
    from models.tiny import write_tiny_model

    root = tmp_path_factory.mktemp("plain-store")
    write_tiny_model(root, "tiny-plain", seed=2, layers=LAYERS, exit_layers=EXITS)
    return ModelStore(root).load("tiny-plain")


def prompt_ids(model: LoadedModel, index: int = 0) -> list[int]:
    return model.encode_chat(PROMPTS[index])


def test_whole_range_matches_transformers_over_64_tokens(model):
    for index in range(3):
        ids = prompt_ids(model, index)
        _, expected = reference_greedy(model, ids, 64)
        answer = decode(LocalStepper(LayerStack(model, 0, LAYERS)), [ids], 64)[0]
        assert list(answer.token_ids) == expected
        assert len(set(expected)) > 5, "the test model must not repeat one token"
        assert {t.decided_by for t in answer.tokens} == {"head"} and {t.layer for t in answer.tokens} == {LAYERS}


def test_exits_disabled_by_threshold_equal_the_full_model(model):
    ids = prompt_ids(model, 1)
    _, expected = reference_greedy(model, ids, 64)
    never = ExitPolicy.top_probability({layer: 1.01 for layer in EXITS})
    answer = decode(LocalStepper(LayerStack(model, 0, LAYERS, exit_policy=never)), [ids], 64)[0]
    assert list(answer.token_ids) == expected


def test_two_stacks_chained_at_a_split_equal_the_whole_model(model):
    ids = prompt_ids(model, 2)
    expected, tokens = reference_greedy(model, ids, 20)
    edge, cloud = LayerStack(model, 0, 3), LayerStack(model, 3, LAYERS)
    for feed, logits in zip([ids] + [[t] for t in tokens], expected, strict=True):
        states = edge.run_tokens([feed]).hidden_states
        actual = cloud.logits(cloud.run(states.clone()).hidden_states)[0]
        assert float((actual - logits).abs().max()) <= 1e-4


@pytest.mark.parametrize("thresholds", [{1: 0.0, 2: 0.0, 4: 0.0}, {1: 2.0, 2: 0.0, 4: 0.0}, {1: 2.0, 2: 2.0, 4: 0.0}])
def test_deferred_completion_leaves_the_caches_of_a_full_pass(plain_model, thresholds):
    """Exited tokens' deeper layers run later, batched; every position ends with the full model's keys/values."""
    model = plain_model
    arrived = []
    stack = LayerStack(model, 0, 4, exit_policy=ExitPolicy.top_probability(thresholds),
                       sinks={4: lambda first, rows: arrived.append((first, rows[0].clone()))})
    fed = [1, 42, 4242, 17, 99]
    result = stack.run_tokens([fed])
    for _ in range(6):
        assert result.exit is not None
        fed.append(result.exit.token_id)
        result = stack.run_tokens([[result.exit.token_id]], complete=False)
    stack.flush()
    reference = LayerStack(model, 0, 4)
    states = reference.run_tokens([fed]).hidden_states[0]
    assert stack.completed == len(fed)
    for segment in stack.segments:
        whole = reference.segments[0].cache
        for layer in range(segment.start, segment.end):
            torch.testing.assert_close(segment.cache.keys[layer - segment.start], whole.keys[layer], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(segment.cache.values[layer - segment.start], whole.values[layer], atol=1e-5, rtol=1e-4)
    positions = [first + i for first, rows in arrived for i in range(rows.shape[0])]
    assert positions == list(range(len(fed))), "every position reaches the sink exactly once, in order"
    torch.testing.assert_close(torch.cat([rows for _, rows in arrived]), states, atol=1e-5, rtol=1e-4)


def test_a_pass_paused_at_a_sink_feeds_it_and_finishes_later_as_one_full_pass(plain_model):
    arrived = []
    stack = LayerStack(plain_model, 0, 4, sinks={2: lambda first, rows: arrived.append((first, rows.shape[1]))})
    paused = stack.run_tokens([[1, 42, 4242, 17]], pause_after=2)
    assert paused.hidden_states is None and arrived == [(0, 4)]  # the rows reached the sink at once
    assert stack.completed == 0 and stack.length == 4
    flushed = stack.flush()  # the deeper layers later (a speculative edge: while the cloud answers)
    then = stack.run_tokens([[99]]).hidden_states
    reference = LayerStack(plain_model, 0, 4)
    whole = reference.run_tokens([[1, 42, 4242, 17, 99]]).hidden_states
    assert flushed is not None
    torch.testing.assert_close(torch.cat([flushed, then], dim=1), whole, atol=1e-5, rtol=1e-4)
    with pytest.raises(AssertionError, match="cannot pause"):
        stack.run_tokens([[5]], pause_after=3)  # not a boundary


def test_a_stopped_flush_leaves_rows_at_its_checkpoint_for_the_next_pass_to_finish_exactly(plain_model):
    stack = LayerStack(plain_model, 0, 4, sinks={1: lambda first, rows: None}, checkpoints=(2, 3))
    stack.run_tokens([[1, 42, 4242, 17]], pause_after=1)
    asked = []

    def stop() -> bool:  # the cloud's answer comes in while [1, 2) runs
        asked.append(True)
        return len(asked) > 1

    assert stack.flush(stop=stop) is None and len(asked) == 2  # asked before [1, 2), then before [2, 3): stopped
    assert stack.completed == 0 and stack.length == 4
    then = stack.run_tokens([[99]]).hidden_states  # the prompt's rows ride from layer 2, ahead of the new one
    whole = LayerStack(plain_model, 0, 4).run_tokens([[1, 42, 4242, 17, 99]]).hidden_states
    assert then is not None and then.shape[1] == 5 and stack.completed == 5
    torch.testing.assert_close(then, whole, atol=1e-5, rtol=1e-4)
    asked.clear()
    assert stack.flush(stop=stop) is None and not asked  # nothing waits: stop is not even asked


def test_an_exit_defers_the_deeper_layers_by_at_most_one_token(plain_model):
    model = plain_model
    stack = LayerStack(model, 0, 4, exit_policy=ExitPolicy.top_probability({1: 0.0, 2: 0.0, 4: 0.0}))
    result = stack.run_tokens([[1, 42, 4242]])
    assert stack.completed == 3
    result = stack.run_tokens([[result.exit.token_id]], complete=False)
    assert result.exit.exit_layer == 1 and result.hidden_states is None
    assert stack.segments[0].length == 4 and stack.completed == 3
    result = stack.run_tokens([[result.exit.token_id]], complete=False)
    assert result.exit.exit_layer == 1
    assert stack.completed == 5  # the waiting row and this one went on to the end together


def test_rollback_then_redecode_gives_identical_states(plain_model):
    model = plain_model
    ids = prompt_ids(model, 0)
    drafts = [11, 222, 3333, 4444]
    stack = LayerStack(model, 0, LAYERS)
    stack.run_tokens([ids])
    first = stack.run_tokens([drafts]).hidden_states
    keys_before = [segment.cache.keys[0].clone() for segment in stack.segments]
    stack.run_tokens([[5, 6, 7]])  # positions that get rejected
    stack.rollback(len(ids) + len(drafts))
    assert stack.length == stack.completed == len(ids) + len(drafts)
    again = stack.run_tokens([[99]]).hidden_states
    stack.rollback(len(ids))
    redone = stack.run_tokens([drafts]).hidden_states
    assert float((redone - first).abs().max()) <= 1e-5
    assert all(float((s.cache.keys[0] - k).abs().max()) <= 1e-5 for s, k in zip(stack.segments, keys_before, strict=True))
    fresh = LayerStack(model, 0, LAYERS)
    fresh.run_tokens([ids + drafts])
    expected = fresh.run_tokens([[99]]).hidden_states
    assert float((again - expected).abs().max()) <= 1e-5


def test_rollback_drops_deferred_rows_past_the_cut(plain_model):
    model = plain_model
    stack = LayerStack(model, 0, 4, exit_policy=ExitPolicy.top_probability({1: 0.0, 2: 0.0, 4: 0.0}))
    result = stack.run_tokens([[1, 42, 4242]])
    stack.run_tokens([[result.exit.token_id]], complete=False)  # position 3 waits past layer 1
    stack.rollback(3)
    assert stack.length == 3 and stack.completed == 3 and stack.segments[0].length == 3
    stack.flush()
    assert stack.completed == 3


@pytest.mark.parametrize("stop_after_checks", [1, 2, 3])
def test_an_abandoned_pass_leaves_the_stack_as_before_it(plain_model, stop_after_checks):
    model = plain_model
    ids = prompt_ids(model, 1)
    sink_rows: list[int] = []
    stack = LayerStack(model, 0, LAYERS, sinks={LAYERS: lambda first, rows: sink_rows.append(rows.shape[1])},
                       checkpoints=(2, 3, 5))
    assert stack.boundaries == [0, 2, 3, 5, LAYERS]
    stack.run_tokens([ids])
    checks = []

    def stop() -> bool:
        checks.append(1)
        return len(checks) >= stop_after_checks

    result = stack.run_tokens([[77]], stop=stop)
    assert result.abandoned and result.hidden_states is None and len(checks) == stop_after_checks
    assert stack.length == stack.completed == len(ids) and all(s.length == len(ids) for s in stack.segments)
    assert sink_rows == [len(ids)], "an abandoned pass never reaches the sink"
    after = stack.run_tokens([[99]]).hidden_states
    fresh = LayerStack(model, 0, LAYERS)
    fresh.run_tokens([ids])
    assert float((after - fresh.run_tokens([[99]]).hidden_states).abs().max()) <= 1e-5


def test_a_pass_carrying_deferred_rows_is_not_abandoned(plain_model):
    stack = LayerStack(plain_model, 0, 4, exit_policy=ExitPolicy.top_probability({1: 0.0, 2: 0.0, 4: 0.0}))
    result = stack.run_tokens([[1, 42, 4242]])
    stack.run_tokens([[result.exit.token_id]], complete=False)  # position 3 waits past layer 1
    carried = stack.run_tokens([[5]], complete=True, stop=lambda: True)
    assert not carried.abandoned and stack.completed == stack.length == 5


def test_a_batch_of_four_sequences_equals_four_single_runs(model):
    prompts = [prompt_ids(model, index) for index in range(4)]
    assert len({len(p) for p in prompts}) > 1, "prompts of unequal length exercise the left padding"
    singles = [model.generate_greedy(p, 24, stop_at_eos=False) for p in prompts]
    assert generate_batch(model, prompts, 24) == singles


def test_several_positions_in_one_forward_equal_one_at_a_time(model):
    ids, drafts = prompt_ids(model, 1), [3, 30, 300, 3000]
    batched = LayerStack(model, 0, LAYERS)
    batched.run_tokens([ids])
    together = batched.logits(batched.run_tokens([drafts]).hidden_states)[0]  # (4, V)
    single = LayerStack(model, 0, LAYERS)
    single.run_tokens([ids])
    one_by_one = torch.cat([single.logits(single.run_tokens([[t]]).hidden_states)[0] for t in drafts])
    assert float((together - one_by_one).abs().max()) <= 1e-4


class ScriptedStepper:
    """Decides tokens from a script; records what it was fed."""

    def __init__(self, script: list[list[int]]) -> None:
        self.script, self.fed = script, []

    def step(self, feed):
        self.fed.append([list(row) for row in feed])
        tokens = self.script.pop(0)
        return [[TokenDecision(token, "draft_accepted", 3, 0.0) for token in tokens]]


def test_loop_stops_at_end_of_sequence_and_feeds_back_what_was_decided():
    stepper = ScriptedStepper([[5], [6, 7], [2], [8]])
    answer = decode(stepper, [[1, 2, 3]], 10, eos_token_id=2, clock=lambda: 0.0)[0]
    assert answer.token_ids == (5, 6, 7, 2)
    assert [t.position for t in answer.tokens] == [3, 4, 5, 6]
    assert stepper.fed == [[[1, 2, 3]], [[5]], [[6, 7]]]


def test_loop_keeps_only_the_token_budget_of_a_multi_token_step():
    answer = decode(ScriptedStepper([[5, 6, 7, 8]]), [[1]], 3, clock=lambda: 0.0)[0]
    assert answer.token_ids == (5, 6, 7)


def test_decided_by_matches_the_wire_vocabulary():
    from typing import get_args

    from broker.messages.tasks import TokenDecider

    assert get_args(TokenDecider) == DECIDERS


def test_an_unsure_exit_check_at_the_end_reports_the_heads_top_token(model):
    end = max(model.exit_heads.exit_layers)
    never = ExitPolicy.top_probability({layer: 1.01 for layer in model.exit_heads.exit_layers})
    stack = LayerStack(model, 0, end, exit_policy=never)
    result = stack.run_tokens([[5, 9, 2, 7]])
    assert result.exit is None and result.hidden_states is not None
    logits = stack.logits(result.hidden_states[:, -1:])[0, -1]
    assert result.head_token == int(logits.argmax())
    assert result.head_probability == pytest.approx(float(torch.softmax(logits.float(), dim=-1).max()), rel=1e-4)


def test_ragged_forward_of_several_sessions_equals_their_separate_runs(plain_model):
    """Cloud-side sessions at different lengths, fed 1 or several rows, share one forward (continuous batching)."""
    model, split = plain_model, 2
    front = LayerStack(model, 0, split)
    rows = {index: front.run_tokens([prompt_ids(model, index) + [40 + index] * 4]).hidden_states for index in range(3)}
    front.reset()
    separate, batched = [LayerStack(model, split, LAYERS) for _ in range(3)], [LayerStack(model, split, LAYERS) for _ in range(3)]
    for index in range(3):  # each session has its prompt cached already, at its own length
        prompt = rows[index][:, :-4]
        separate[index].run(prompt)
        batched[index].run(prompt)
    # session 0 asks for one token, session 1 verifies three drafts, session 2 re-sends its last two rows
    feeds = [(rows[0][:, -4:-3], batched[0].length), (rows[1][:, -4:-1], batched[1].length),
             (rows[2][:, -6:-4], batched[2].length - 2)]
    together = LayerStack.run_ragged(batched, [feed for feed, _ in feeds], [position for _, position in feeds])
    for stack, (feed, position), result in zip(separate, feeds, together, strict=True):
        alone = stack.run(feed, position=position).hidden_states
        assert result.shape == alone.shape
        assert float((result - alone).abs().max()) <= 1e-5
    for alone, shared in zip(separate, batched, strict=True):
        assert shared.length == alone.length
        keys = [(a.cache.keys[-1], b.cache.keys[-1]) for a, b in zip(alone.segments, shared.segments, strict=True)]
        assert all(float((a - b).abs().max()) <= 1e-5 for a, b in keys)
    next_rows = [rows[0][:, -3:-2], rows[1][:, -1:], rows[2][:, -4:-3]]  # and they go on decoding as before
    together = LayerStack.run_ragged(batched, next_rows, [stack.length for stack in batched])
    for stack, feed, result in zip(separate, next_rows, together, strict=True):
        assert float((result - stack.run(feed).hidden_states).abs().max()) <= 1e-5


def test_a_ragged_forward_that_fails_half_way_leaves_every_cache_as_it_was(plain_model):
    model, split = plain_model, 2
    rows = LayerStack(model, 0, split).run_tokens([prompt_ids(model, 0) + [41, 42]]).hidden_states
    stacks = [LayerStack(model, split, LAYERS) for _ in range(2)]
    for stack in stacks:
        stack.run(rows[:, :-2])
    before = [[segment.cache.length() for segment in stack.segments] for stack in stacks]
    layer = stacks[0].segments[0].layers[1]  # the second layer fails after the first has cached its keys

    def broken(*_args):
        raise RuntimeError("layer failed")

    layer.ragged = broken
    with pytest.raises(RuntimeError):
        LayerStack.run_ragged(stacks, [rows[:, -2:-1], rows[:, -2:]], [stack.length for stack in stacks])
    del layer.ragged
    assert [[segment.cache.length() for segment in stack.segments] for stack in stacks] == before
    assert all(len({cache.length for cache in segment.cache.layers}) == 1 for stack in stacks for segment in stack.segments)
    fresh = LayerStack(model, split, LAYERS)
    expected = fresh.run(rows).hidden_states[:, -2:]
    again = LayerStack.run_ragged(stacks, [rows[:, -2:-1], rows[:, -2:]], [stack.length for stack in stacks])
    assert float((again[1] - expected).abs().max()) <= 1e-5


def test_copy_candidates_follow_the_fed_tokens_through_rollbacks_and_abandoned_passes(plain_model):
    from models.exits.copying import CopyIndex

    ids = prompt_ids(plain_model, 0)
    stack = LayerStack(plain_model, 0, LAYERS, checkpoints=(3,))
    stack.run_tokens([ids])
    assert stack.copy_candidates == CopyIndex(ids).candidates()
    stack.run_tokens([[ids[-3]]])
    stack.run_tokens([[ids[-2]]])  # repeats the prompt's last-but-two then last-but-one tokens
    assert stack.copy_candidates == (ids[-1], ids[-1])
    stack.rollback(len(ids) + 1)
    assert stack.copy_candidates == CopyIndex([*ids, ids[-3]]).candidates()
    assert stack.run_tokens([[11]], stop=lambda: True).abandoned
    assert stack.copy_candidates == CopyIndex([*ids, ids[-3]]).candidates()
    deeper = LayerStack(plain_model, 2, LAYERS)  # fed states, not token ids
    deeper.run(torch.zeros(1, 3, plain_model.hidden_size))
    assert deeper.copy_candidates is None
