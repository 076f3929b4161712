"""Speculative decoding on the real SmolLM2 with its real exit heads: greedy output equals cloud-only (slow)."""

from __future__ import annotations

import pytest

from edge_node.collab.config import CollabConfig
from edge_node.collab.generation import generate
from tests.integration import test_decoding_paths

pytestmark = pytest.mark.slow

NEW_TOKENS = 48
PROMPTS = ("Explain how a compass works.", "Write a haiku about autumn rain.", "What is the boiling point of water?",
           "List three uses of copper.")

# The real model and an edge client of a cloud service on a real Mosquitto: the decoding paths' fixtures.
real_model, client = test_decoding_paths.real_model, test_decoding_paths.client


def test_speculative_with_real_exits_equals_cloud_only_on_every_prompt(client, real_model):
    assert real_model.exit_heads is not None and real_model.exit_policy is not None, "the store's model needs its heads"
    cloud_only = CollabConfig(mode="cloud_only", cloud_deadline_s=60.0)
    accepted = 0
    for text in PROMPTS:
        prompt_ids = real_model.encode_chat(text)
        expected = generate(real_model, prompt_ids, NEW_TOKENS, cloud_only, client, stop_at_eos=False).token_ids
        config = CollabConfig(mode="speculative", cloud_deadline_s=60.0)
        answer = generate(real_model, prompt_ids, NEW_TOKENS, config, client, stop_at_eos=False)
        assert not answer.fallback, f"{text}: the cloud fell silent"
        assert answer.token_ids == expected, text
        accepted += answer.accepted_drafts
    assert accepted > len(PROMPTS) * NEW_TOKENS // 4, "the real exit heads' drafts are mostly accepted"
