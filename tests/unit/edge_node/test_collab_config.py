"""Collaborative settings: where a speculative edge drafts."""

from __future__ import annotations

import pytest

from edge_node.collab.config import CollabConfig, drafting_split, drafts_with_whole_model
from runtime.settings import ConfigError


def test_drafting_split_is_the_speculative_layer_only_where_a_head_drafts():
    deeper = CollabConfig(split_layer=20, speculative_split_layer=26)
    assert drafting_split(deeper, 30, (10, 15, 20, 26)) == 26
    assert drafting_split(deeper, 30, (10, 15, 20)) == 20  # no head at 26: the collaborative split
    assert drafting_split(deeper, 24, (10, 15, 20, 26)) == 20  # a shallower model
    assert drafting_split(CollabConfig(split_layer=20), 30, (10, 15, 20, 26)) == 20  # 0: the split layer


def test_only_a_speculative_edge_consults_the_draft_rules_on_its_way_to_the_split():
    from types import SimpleNamespace

    from edge_node.collab.generation import exit_policy_for
    from models.exits.policy import ExitPolicy

    policy = ExitPolicy(ExitPolicy.top_probability({10: 0.9, 15: 0.9, 20: 0.8}).rules,
                        ExitPolicy.top_probability({24: 0.7, 26: 0.7, 28: 0.6}).rules)
    model = SimpleNamespace(exit_policy=policy, model_id="m")
    speculative = CollabConfig(mode="speculative", split_layer=26)  # the drafting split, as generate() sets it
    assert exit_policy_for(model, speculative).exit_layers == (10, 15, 20, 24, 26)
    assert exit_policy_for(model, CollabConfig(mode="collaborative")).exit_layers == (10, 15, 20)
    assert exit_policy_for(model, CollabConfig(mode="speculative")).exit_layers == (10, 15, 20)  # split 20


def test_rows_travel_exact_for_speculative_and_half_for_collaborative_unless_set():
    assert CollabConfig(mode="speculative").wire_dtype() == "fp32"
    assert CollabConfig(mode="collaborative").wire_dtype() == "fp16"
    assert CollabConfig(mode="speculative", state_dtype="int8").wire_dtype() == "int8"
    assert CollabConfig(mode="collaborative", state_dtype="fp32").wire_dtype() == "fp32"


def test_an_unknown_state_dtype_is_refused_by_name():
    import pytest

    with pytest.raises(ValueError, match="state_dtype"):
        CollabConfig(state_dtype="bf16")  # type: ignore[arg-type]


def test_the_whole_model_drafts_by_default_where_it_goes_past_the_split():
    assert drafts_with_whole_model(CollabConfig(mode="speculative"), 30)
    assert not drafts_with_whole_model(CollabConfig(mode="speculative", speculative_draft="exits"), 30)
    assert not drafts_with_whole_model(CollabConfig(mode="speculative", split_layer=20), 20)  # nothing past the split
    with pytest.raises(ConfigError, match="speculative_draft"):
        CollabConfig(speculative_draft="layers")  # type: ignore[arg-type]
