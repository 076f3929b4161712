"""The edge's KV cache stays exact when tokens exit early (deferred completion), no broker needed."""

import pytest
import torch

from edge_node.collab_edge import NO_EXIT, EdgeStack
from models.exit_policy import ExitPolicy
from models.store import ModelStore
from models.tiny import write_tiny_model

SPLIT, EXITS = 4, (1, 2, 4)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("store")
    write_tiny_model(root, "tiny-llama", seed=2, layers=6, exit_layers=EXITS)
    return ModelStore(root).load("tiny-llama")


def reference_layers(model, token_ids):
    """Keys/values and layer-k states of layers [0, SPLIT) run over the whole sequence in one pass."""
    decoder = model.decoder_slice(0, SPLIT)
    with torch.no_grad():
        states = decoder(model.embedding_slice()(torch.tensor([token_ids])))[0]  # (T, C)
    return decoder.cache, states


@pytest.mark.parametrize("thresholds", [{1: 0.0, 2: 0.0, 4: 0.0}, {1: 2.0, 2: 0.0, 4: 0.0}, {1: 2.0, 2: 2.0, 4: 0.0}])
def test_early_exits_leave_the_same_cache_as_the_full_pass(model, thresholds):
    policy = ExitPolicy.top_probability(thresholds)
    emitted = []
    stack = EdgeStack(model, SPLIT, policy, on_layer_k=lambda first, rows: emitted.append((first, rows.clone())))
    prompt = [1, 42, 4242, 17, 99]
    fed = list(prompt)
    decision = stack.run(prompt, complete=True)
    for _ in range(6):
        assert decision.token_id != NO_EXIT
        fed.append(decision.token_id)
        decision = stack.run([decision.token_id])
    stack.flush()
    cache, states = reference_layers(model, fed)
    assert stack.completed == len(fed)
    for segment in stack.segments:
        for layer in range(segment.start, segment.end):
            keys = segment.cache.keys[layer - segment.start]
            assert keys is not None and keys.shape[2] == len(fed), f"layer {layer} holds {keys.shape[2]} positions"
            torch.testing.assert_close(keys, cache.keys[layer], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(segment.cache.values[layer - segment.start], cache.values[layer], atol=1e-5, rtol=1e-4)
    positions = [first + i for first, rows in emitted for i in range(rows.shape[0])]
    assert positions == list(range(len(fed))), "every position reaches layer k exactly once, in order"
    torch.testing.assert_close(torch.cat([rows for _, rows in emitted]), states, atol=1e-5, rtol=1e-4)


def test_exit_defers_deeper_layers_at_most_one_token(model):
    stack = EdgeStack(model, SPLIT, ExitPolicy.top_probability({1: 0.0, 2: 0.0, 4: 0.0}))
    decision = stack.run([1, 42, 4242], complete=True)
    assert stack.completed == 3
    decision = stack.run([decision.token_id])
    assert decision.exit_layer == 1
    assert stack.segments[0].length == 4 and stack.completed == 3  # exited at layer 1: layers [1, 4) wait
    decision = stack.run([decision.token_id])
    assert decision.exit_layer == 1
    assert stack.completed == 5  # the waiting row and this one went on to layer k together
