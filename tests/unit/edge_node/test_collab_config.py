"""Collaborative settings: where a speculative edge drafts."""

from __future__ import annotations

from edge_node.collab.config import CollabConfig, drafting_split


def test_drafting_split_is_the_speculative_layer_only_where_a_head_drafts():
    deeper = CollabConfig(split_layer=20, speculative_split_layer=26)
    assert drafting_split(deeper, 30, (10, 15, 20, 26)) == 26
    assert drafting_split(deeper, 30, (10, 15, 20)) == 20  # no head at 26: the collaborative split
    assert drafting_split(deeper, 24, (10, 15, 20, 26)) == 20  # a shallower model
    assert drafting_split(CollabConfig(split_layer=20), 30, (10, 15, 20, 26)) == 20  # 0: the split layer
