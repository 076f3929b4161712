"""The default edge variant (lossless q4) on every path: standalone, collaborative, speculative, cloud-only (slow).

q4's weights dequantize to fp32's exactly, so its greedy answers are fp32's; the cloud serves the same model id.
"""

from __future__ import annotations

import pytest
import torch

from edge_node.collab.config import CollabConfig
from edge_node.collab.generation import generate
from models.catalog import BASE_MODEL_ID, prepare
from models.decode_loop import LocalStepper, decode
from models.decoding import LayerStack
from models.paths import default_store_root
from models.store import ModelStore

pytestmark = pytest.mark.slow

Q4_MODEL_ID = f"{BASE_MODEL_ID}-q4"
NEW_TOKENS = 24
PROMPT = "Explain how a compass works."


@pytest.fixture(scope="module")
def store():
    torch.set_num_threads(1)
    store = ModelStore(default_store_root())
    prepare(store)
    return store


@pytest.fixture(scope="module")
def q4_model(store):
    model = store.load(Q4_MODEL_ID)
    assert model.exit_heads is not None and model.exit_policy is not None, "q4 carries the committed exit heads"
    return model


@pytest.fixture(scope="module")
def fp32_greedy(store):
    fp32 = store.load(BASE_MODEL_ID)
    decoded = decode(LocalStepper(LayerStack(fp32, 0, fp32.num_layers)), [fp32.encode_chat(PROMPT)], NEW_TOKENS)
    return decoded[0].token_ids


@pytest.fixture
def client(store_collab_client):
    return store_collab_client


def answer(model, client, mode: str):
    config = CollabConfig(mode=mode, cloud_deadline_s=60.0)
    return generate(model, model.encode_chat(PROMPT), NEW_TOKENS, config, client, stop_at_eos=False)


@pytest.mark.parametrize("mode", ["cloud_only", "speculative"])
def test_exact_modes_on_q4_give_the_fp32_greedy_answer(client, q4_model, fp32_greedy, mode):
    result = answer(q4_model, client, mode)
    assert not result.fallback, f"{mode}: the cloud fell silent"
    assert list(result.token_ids) == list(fp32_greedy[:NEW_TOKENS])


def test_collaborative_on_q4_asks_the_cloud_only_for_some_tokens(client, q4_model):
    result = answer(q4_model, client, "collaborative")
    assert not result.fallback and len(result.token_ids) == NEW_TOKENS
    assert 0 < result.cloud_requests < NEW_TOKENS, "exits decide some tokens on the edge, the cloud the others"


def test_standalone_q4_with_exits_decides_every_token_on_the_edge(q4_model):
    result = answer(q4_model, None, "standalone")
    assert result.cloud_requests == 0 and len(result.token_ids) == NEW_TOKENS
