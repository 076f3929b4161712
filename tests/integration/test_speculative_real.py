"""Speculative decoding on the real SmolLM2 with its real exit heads: greedy output equals cloud-only (slow)."""

from __future__ import annotations

import pytest
import torch

from broker.client import BusClient
from cloud_node.config import CloudConfig
from cloud_node.service import CloudService
from edge_node.collab.config import CollabConfig
from edge_node.collab.generation import generate
from edge_node.collab.link import CollabClient
from models.catalog import BASE_MODEL_ID, prepare
from models.paths import default_store_root
from models.store import ModelStore

pytestmark = pytest.mark.slow

NEW_TOKENS = 48
PROMPTS = ("Explain how a compass works.", "Write a haiku about autumn rain.", "What is the boiling point of water?",
           "List three uses of copper.")


@pytest.fixture(scope="module")
def real_model():
    torch.set_num_threads(1)
    store = ModelStore(default_store_root())
    prepare(store, only_base=True)
    model = store.load(BASE_MODEL_ID)
    assert model.exit_heads is not None and model.exit_policy is not None, "the store's model needs its exit heads"
    return model


@pytest.fixture
def client(mosquitto, tmp_path):
    cloud = CloudService(CloudConfig(node_id="cloud-1", bus=mosquitto.bus_config(), model_store=str(default_store_root()),
                                     state_dir=str(tmp_path / "state"), heartbeat_interval_s=1.0)).start()
    bus = BusClient("pi-01", mosquitto.bus_config("pi-01")).connect()
    yield CollabClient(bus, "pi-01")
    bus.close()
    cloud.stop()


def test_speculative_with_real_exits_equals_cloud_only_on_every_prompt(client, real_model):
    cloud_only = CollabConfig(mode="cloud_only", cloud_deadline_s=60.0)
    accepted = ahead = 0
    for text in PROMPTS:
        prompt_ids = real_model.encode_chat(text)
        expected = generate(real_model, prompt_ids, NEW_TOKENS, cloud_only, client, stop_at_eos=False).token_ids
        config = CollabConfig(mode="speculative", cloud_deadline_s=60.0)
        answer = generate(real_model, prompt_ids, NEW_TOKENS, config, client, stop_at_eos=False)
        assert not answer.fallback, f"{text}: the cloud fell silent"
        assert answer.token_ids == expected, text
        accepted += answer.accepted_drafts
        ahead += answer.drafts_ahead
    assert accepted > len(PROMPTS) * NEW_TOKENS // 4, "the real exit heads' drafts are mostly accepted"
    assert ahead > 0, "the edge drafts on while verifications are in flight"
