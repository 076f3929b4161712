"""Every lossless path equals transformers' own greedy decoding of the real SmolLM2 over 64 tokens (slow).

The paths run as in the fleet: a real Mosquitto, a cloud service in this process, an edge client on
the bus; the yardstick is `models.reference.reference_greedy`, which shares no code with the core.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edge_node.collab.config import CollabConfig
from edge_node.collab.generation import generate
from models.catalog import BASE_MODEL_ID, prepare
from models.paths import default_store_root
from models.reference import reference_greedy
from models.runner import generate_with_exits
from models.store import ModelStore

pytestmark = pytest.mark.slow

NEW_TOKENS = 64
PROMPTS = ("Explain how a compass works.", "Write a haiku about autumn rain.", "What is the boiling point of water?")


@pytest.fixture(scope="module")
def real_model():
    torch.set_num_threads(1)
    store = ModelStore(default_store_root())
    prepare(store, only_base=True)
    return store.load(BASE_MODEL_ID)


@pytest.fixture(scope="module")
def references(real_model):
    return {text: reference_greedy(real_model, real_model.encode_chat(text), NEW_TOKENS)[1] for text in PROMPTS}


@pytest.fixture
def client(store_collab_client):
    return store_collab_client


def test_standalone_with_exits_disabled_equals_transformers(real_model, references):
    never = dataclasses.replace(real_model.exit_policy, rules=tuple(
        dataclasses.replace(rule, threshold=1.01) for rule in real_model.exit_policy.rules))
    for text, expected in references.items():
        answer = generate_with_exits(real_model, real_model.encode_chat(text), NEW_TOKENS, never, stop_at_eos=False)
        assert list(answer.token_ids) == expected, text


@pytest.mark.parametrize("mode", ["cloud_only", "naive_split", "collaborative"])
def test_cloud_paths_equal_transformers(client, real_model, references, mode):
    config = CollabConfig(mode=mode, threshold=1.0, cloud_deadline_s=30.0)  # threshold 1.0: no exit ever fires
    for text, expected in references.items():
        answer = generate(real_model, real_model.encode_chat(text), NEW_TOKENS, config, client, stop_at_eos=False)
        assert not answer.fallback, f"{mode}: the cloud fell silent"
        assert list(answer.token_ids) == expected, f"{mode}: {text}"
        assert {t.decided_by for t in answer.tokens} == {"cloud"}
