"""Routing in the center's rounds: where each task goes and which route it carries (pure)."""

import pytest

from fleet_center.round_routing import RoundRouting, route_tasks
from routing.routers import EdgeState
from runtime.settings import ConfigError

EDGES = {"pi-01": EdgeState(queue_depth=0), "pi-02": EdgeState(queue_depth=9)}
TASKS = [("r1-pi-01-0", "pi-01", 0), ("r1-pi-02-0", "pi-02", 2)]


def test_miner_rounds_let_the_arrival_edge_decide():
    routed = route_tasks(RoundRouting("miner"), TASKS, EDGES)
    assert [(r.edge_id, r.route) for r in routed] == [("pi-01", "auto"), ("pi-02", "auto")]


def test_cloud_only_rounds_send_every_task_through_its_edge_to_the_cloud():
    assert {r.route for r in route_tasks(RoundRouting("cloud_only"), TASKS, EDGES)} == {"cloud"}


def test_resource_rounds_offload_from_a_busy_edge_only():
    routed = route_tasks(RoundRouting("resource"), TASKS, EDGES)
    assert [r.route for r in routed] == ["edge", "cloud"]


def test_a_task_whose_edge_went_offline_goes_to_the_least_busy_edge():
    routed = route_tasks(RoundRouting("edge_only"), [("r1-pi-03-0", "pi-03", 1)], EDGES)
    assert routed[0].edge_id == "pi-01"


def test_rounds_refuse_the_oracle():
    with pytest.raises(ConfigError, match="hindsight"):
        RoundRouting("oracle")


def test_routing_without_edges_is_an_error():
    with pytest.raises(ValueError, match="no online edge"):
        route_tasks(RoundRouting("miner"), TASKS, {})
