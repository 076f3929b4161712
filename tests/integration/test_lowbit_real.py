"""The real low-bit variants: q4 is a lossless re-encoding of the fp32 store (slow)."""

from __future__ import annotations

import pytest
import torch

from models.catalog import BASE_MODEL_ID, prepare
from models.decode_loop import LocalStepper, decode
from models.decoding import LayerStack
from models.lowbit.modules import LowBitLinear
from models.paths import default_store_root
from models.store import ModelStore

pytestmark = pytest.mark.slow
Q4_MODEL_ID = f"{BASE_MODEL_ID}-q4"
PROMPTS = ("Explain how a compass works in three sentences.", "Translate to French: The weather is nice today.",
           "List three uses of copper.")


@pytest.fixture(scope="module")
def real_store() -> ModelStore:
    torch.set_num_threads(2)
    store = ModelStore(default_store_root())
    prepare(store)  # quick when `make test` already prepared the store
    return store


def greedy_tokens(store: ModelStore, model_id: str, prompt: str, steps: int) -> tuple[int, ...]:
    loaded = store.load(model_id)
    stack = LayerStack(loaded, 0, loaded.num_layers)
    return decode(LocalStepper(stack), [loaded.encode_chat(prompt)], steps)[0].token_ids


@pytest.mark.parametrize("prompt", PROMPTS)
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
