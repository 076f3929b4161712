"""The real SmolLM2-135M store: load time, slice exactness, catalog variants, lossless q4 (slow)."""

from __future__ import annotations

import time

import pytest
import torch

from models.catalog import BASE_MODEL_ID, CATALOG, prepare
from models.decode_loop import LocalStepper, decode
from models.decoding import LayerStack
from models.loaded import LoadedModel
from models.lowbit.modules import LowBitLinear
from models.paths import default_store_root
from models.store import ModelStore

pytestmark = pytest.mark.slow
Q4_MODEL_ID = f"{BASE_MODEL_ID}-q4"
Q4_PROMPTS = ("Explain how a compass works in three sentences.", "Translate to French: The weather is nice today.",
              "List three uses of copper.")


@pytest.fixture(scope="module")
def real_store() -> ModelStore:
    torch.set_num_threads(2)
    store = ModelStore(default_store_root())
    prepare(store)  # quick when `make test` already prepared the store
    return store


@pytest.fixture(scope="module")
def real_model(real_store: ModelStore) -> LoadedModel:
    return real_store.load(BASE_MODEL_ID)


def test_prepared_model_loads_within_three_seconds(real_store: ModelStore) -> None:
    started = time.perf_counter()
    loaded = real_store.load(BASE_MODEL_ID)
    assert time.perf_counter() - started <= 3.0
    assert (loaded.num_layers, loaded.hidden_size, loaded.vocab_size) == (30, 576, 49152)


def test_real_manifest_verifies(real_store: ModelStore) -> None:
    manifest = real_store.verify(BASE_MODEL_ID)
    assert manifest.parameters == 134_515_008 and manifest.layers == 30


@torch.no_grad()
def test_two_slices_match_full_model_over_50_greedy_steps(real_model: LoadedModel) -> None:
    from transformers import DynamicCache

    prompt_ids = real_model.encode_chat("What is the capital of France?")
    cache = DynamicCache(config=real_model.config)
    embedding, edge, cloud, head = (real_model.embedding_slice(), real_model.decoder_slice(0, 13),
                                    real_model.decoder_slice(13, 30), real_model.head_slice())
    ids, worst = prompt_ids, 0.0
    for _ in range(51):
        expected = real_model.model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True).logits[0]
        actual = head(cloud(edge(embedding(torch.tensor([ids])))))[0]
        worst = max(worst, float((actual - expected).abs().max()))
        ids = [int(expected[-1].argmax())]
    assert worst <= 1e-4


def test_full_model_answers_sensibly(real_model: LoadedModel) -> None:
    answer = real_model.decode(real_model.generate_greedy(real_model.encode_chat("What is the capital of France?"), 12))
    assert "Paris" in answer


@pytest.mark.parametrize("model_id", [entry.model_id for entry in CATALOG if entry.model_id != BASE_MODEL_ID])
def test_catalog_variant_loads_and_generates(real_store: ModelStore, model_id: str) -> None:
    loaded = real_store.load(model_id)
    new_ids = loaded.generate_greedy(loaded.encode_chat("Name a colour of the sky."), 8, stop_at_eos=False)
    assert len(new_ids) == 8 and loaded.decode(new_ids).strip()
    assert loaded.memory_bytes() < 600e6


def test_committed_exit_heads_ship_with_the_base_model(real_model: LoadedModel) -> None:
    # exits at 10/15/20 and speculative decoding's draft heads at 24/26/28, whose rules stay apart
    assert real_model.exit_heads is not None and real_model.exit_heads.exit_layers == (10, 15, 20, 24, 26, 28)
    assert real_model.exit_policy is not None and real_model.exit_policy.exit_layers == (10, 15, 20)
    assert [rule.exit_layer for rule in real_model.exit_policy.draft_rules] == [24, 26, 28]
    hidden_states = real_model.decoder_slice(0, 10)(real_model.embedding_slice()(torch.tensor([[1, 9690, 198]])))
    probabilities = real_model.exit_probabilities(10, hidden_states)
    assert torch.allclose(probabilities.sum(-1), torch.ones(1, 3), atol=1e-4)


def greedy_tokens(store: ModelStore, model_id: str, prompt: str, steps: int) -> tuple[int, ...]:
    loaded = store.load(model_id)
    stack = LayerStack(loaded, 0, loaded.num_layers)
    return decode(LocalStepper(stack), [loaded.encode_chat(prompt)], steps)[0].token_ids


@pytest.mark.parametrize("prompt", Q4_PROMPTS)
def test_q4_greedy_tokens_equal_fp32_over_32_steps(real_store: ModelStore, prompt: str) -> None:
    assert greedy_tokens(real_store, Q4_MODEL_ID, prompt, 32) == greedy_tokens(real_store, BASE_MODEL_ID, prompt, 32)


@torch.no_grad()
def test_q4_weights_dequantize_to_the_fp32_weights_exactly(real_store: ModelStore) -> None:
    fp32 = dict(real_store.load(BASE_MODEL_ID).model.named_modules())
    q4 = real_store.load(Q4_MODEL_ID).model
    checked = 0
    for name, module in q4.named_modules():
        if isinstance(module, LowBitLinear):
            assert torch.equal(module.dequantized(), fp32[name].weight), f"{name} differs from fp32"
            checked += 1
    assert checked == 30 * 7 + 1  # every decoder linear and the tied LM head
