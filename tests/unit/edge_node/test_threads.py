"""How many torch threads an edge runs."""

from edge_node.service import torch_threads_for


def test_threads_follow_the_setting_else_the_cpu_quota():
    assert torch_threads_for(3, 0.25) == 3
    assert torch_threads_for(0, 0.25) == 1 and torch_threads_for(0, 1.5) == 2
    assert torch_threads_for(0, 0.0) == 0  # all cores
