"""Session contexts with a tiny random-weight model: lazy KV catch-up, duplicates, gaps, TTL and LRU."""

import numpy as np
import pytest
import torch

from broker.messages.inference import DraftVerify
from cloud_node.contexts import SessionContext, SessionContexts, acceptance
from models.store import ModelStore
from models.tiny import write_tiny_model

SPLIT = 2


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("store")
    write_tiny_model(root, "tiny-llama", seed=3, layers=4)
    return ModelStore(root).load("tiny-llama")


def layer_k_states(model, token_ids):
    with torch.no_grad():
        return model.decoder_slice(0, SPLIT)(model.embedding_slice()(torch.tensor([token_ids])))[0]  # (T, C)


def full_next_tokens(model, token_ids):
    with torch.no_grad():
        return model.full_logits(torch.tensor([token_ids]))[0].argmax(dim=-1).tolist()  # (T,)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_tokens_from_reordered_and_duplicated_chunks_match_the_full_model(model):
    token_ids = [1, 17, 400, 9000, 23, 5, 77, 1200]
    rows = layer_k_states(model, token_ids).half().numpy()
    context = SessionContext("s", "pi-01", model, SPLIT, now_s=0.0)
    context.add_rows(4, rows[4:8])
    assert context.first_missing(5) == 0
    context.add_rows(0, rows[0:4])
    context.add_rows(2, rows[2:6])  # duplicate rows are ignored
    assert context.duplicate_rows == 4 and context.first_missing(7) is None
    expected = full_next_tokens(model, token_ids)
    for position in (3, 4, 7):  # lazily catches up over several positions at once
        assert context.token_for(position).token_id == expected[position]
    assert context.token_for(5).token_id == expected[5]  # asked again for an earlier position: recomputed


def test_gap_is_reported_as_first_missing_position(model):
    rows = layer_k_states(model, [1, 2, 3, 4]).half().numpy()
    context = SessionContext("s", "pi-01", model, SPLIT, now_s=0.0)
    context.add_rows(0, rows[:2])
    context.add_rows(3, rows[3:])
    assert context.first_missing(3) == 2 and context.first_missing(1) is None


def test_idle_sessions_expire_with_a_reason(model):
    clock = FakeClock()
    manager = SessionContexts(ttl_s=10.0, memory_cap_bytes=1 << 30, clock=clock)
    manager.open("a", "pi-01", model, SPLIT)
    clock.now = 5.0
    manager.open("b", "pi-01", model, SPLIT)
    clock.now = 12.0
    assert manager.sweep() == ["a"]
    assert manager.get("a") is None and manager.why_unknown("a") == "expired"
    assert manager.get("b") is not None and manager.expirations == 1


def test_memory_cap_evicts_the_least_recently_used_session(model):
    clock = FakeClock()
    manager = SessionContexts(ttl_s=100.0, memory_cap_bytes=1 << 30, clock=clock)
    rows = np.zeros((100, model.hidden_size), dtype=np.float16)
    for index, session_id in enumerate(("a", "b", "c")):
        clock.now = float(index)
        manager.open(session_id, "pi-01", model, SPLIT).add_rows(0, rows)
    clock.now = 3.0
    manager.get("a")  # a is used again: b is now the least recently used
    manager.memory_cap_bytes = manager.bytes_held() - 1
    assert manager.enforce_cap(protect="c") == ["b"]
    assert manager.why_unknown("b") == "evicted (memory cap)"
    assert manager.figures()["sessions"] == 2.0 and manager.evictions == 1


def test_unknown_session_reason_says_never_opened(model):
    manager = SessionContexts(ttl_s=10.0, memory_cap_bytes=1 << 20)
    assert "never opened" in manager.why_unknown("nope")


def test_a_verification_with_a_token_outside_the_vocabulary_is_refused_not_crashed():
    logits = torch.zeros(2, 50)
    logits[:, 7] = 1.0
    assert acceptance(logits, DraftVerify("s", "w", 0, 5, (7, 3))) == (1, 7)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        acceptance(logits, DraftVerify("s", "w", 0, 5, (7, 50)))
    sampled = DraftVerify("s", "w", 0, 5, (7,), temperature=0.7, draft_probabilities=(0.5,), support_sizes=(2,),
                          draft_support=(7, 999), draft_support_probabilities=(0.5, 0.5))
    with pytest.raises(ValueError, match="token id 999 outside"):
        acceptance(logits[:1], sampled)
