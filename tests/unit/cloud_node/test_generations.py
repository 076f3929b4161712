"""Continuous batching of cloud-only generations on a tiny random-weight model: joining, leaving, exactness."""

import pytest
import torch

from cloud_node.generations import GenerationBatch
from models.store import ModelStore, VariantSpec, write_model
from models.tiny import make_varied_tiny_model

PROMPTS = ("Write one sentence about the sea.", "What is DNA?", "List three colours.", "Translate: 你好 to English")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("store")
    write_model(root, "tiny-generations", make_varied_tiny_model(seed=5, layers=4),
                VariantSpec(variant="tiny", storage_dtype="float32", source="test"))
    return ModelStore(root).load("tiny-generations")


def run_to_end(batch, joins_at=None):
    """Step until empty; `joins_at` {step: [(handle, prompt, budget, eos token id)]} joins before that step.
    Returns {handle: (token ids, the step it finished at)}."""
    joins_at = joins_at or {}
    answers, step = {}, 0
    while batch or any(key >= step for key in joins_at):
        for handle, prompt, budget, eos in joins_at.get(step, []):
            batch.add(handle, prompt, budget, eos)
        if batch:
            for generation in batch.step().finished:
                answers[generation.handle] = (generation.token_ids, step)
        step += 1
    return answers


def test_generations_that_join_at_different_steps_each_equal_their_lone_greedy_answer(model):
    prompts = [model.encode_chat(text) for text in PROMPTS]
    budgets = [12, 5, 9, 7]
    batch = GenerationBatch(model, max_batch=8)
    answers = run_to_end(batch, {0: [("a", prompts[0], budgets[0], None), ("b", prompts[1], budgets[1], None)],
                                 3: [("c", prompts[2], budgets[2], None)],
                                 4: [("d", prompts[3], budgets[3], None)]})
    for handle, prompt, budget in zip("abcd", prompts, budgets, strict=True):
        expected = model.generate_greedy(prompt, budget, stop_at_eos=False)
        assert answers[handle][0] == expected
    assert len({token for ids, _ in answers.values() for token in ids}) > 4, "the test model must not repeat one token"
    # Each leaves at its own last step: the short answer does not wait for the long one.
    assert answers["b"][1] == 4 and answers["a"][1] == 11 and answers["c"][1] == 3 + 8 and answers["d"][1] == 4 + 6


def test_an_answer_ends_at_its_end_of_sequence_token_only_when_asked(model):
    prompt = model.encode_chat(PROMPTS[0])
    free = model.generate_greedy(prompt, 10, stop_at_eos=False)
    eos = free[3]  # as if the model's fourth token ended the answer
    batch = GenerationBatch(model, max_batch=2)
    answers = run_to_end(batch, {0: [("stops", prompt, 10, eos), ("goes-on", prompt, 10, None)]})
    assert answers["stops"][0] == free[: free.index(eos) + 1]
    assert answers["goes-on"][0] == free


def test_the_batch_is_bounded_and_a_step_counts_its_rows_and_tokens(model):
    prompts = [model.encode_chat(text) for text in PROMPTS[:3]]
    batch = GenerationBatch(model, max_batch=2)
    batch.add("a", prompts[0], 4, None)
    batch.add("b", prompts[1], 4, None)
    assert batch.room == 0
    with pytest.raises(AssertionError):
        batch.add("c", prompts[2], 4, None)
    first = batch.step()
    assert first.rows == len(prompts[0]) + len(prompts[1]) and first.tokens == 2 and not first.finished
    second = batch.step()
    assert second.rows == 2 and second.tokens == 2
    generation = batch.active[0]
    assert generation.ttft_ms >= 0 and generation.first_token_at is not None
