"""Rounds with query routing (center.router): real Mosquitto, center, two edges and a cloud, tiny models."""

import dataclasses

import pytest

from fleet_center.config import CenterConfig
from fleet_center.service import CenterService
from runtime.settings import load
from tests.conftest import wait_until
from tests.integration.test_rounds import center_config, start_fleet
from tests.integration.test_rounds import store as store  # the fixture, used by name


def routed_center(mosquitto, store, tmp_path, router: str) -> CenterService:
    config = center_config(mosquitto, store, tmp_path, total_rounds=2)
    routed = load(CenterConfig, env={}, overrides=[f"router={router}", "router_cloud_probability=1.0"])
    config = dataclasses.replace(config, router=routed.router, router_cloud_probability=routed.router_cloud_probability)
    return CenterService(config).start()


@pytest.mark.parametrize(("router", "cloud_answers"), [("cloud_only", 4), ("random", 4), ("edge_only", 0), ("miner", 0)])
def test_routed_rounds_answer_every_task_through_the_edges(mosquitto, store, tmp_path, router, cloud_answers):
    """random at p = 1 sends all to the cloud; the miner without a miner file for tiny-a keeps all on the edges."""
    edges, cloud = start_fleet(mosquitto, store, tmp_path)
    center = routed_center(mosquitto, store, tmp_path, router)
    try:
        assert wait_until(lambda: len(center.db.finished_rounds()) == 2, 120)
        for round_index in (0, 1):
            summary = center.db.round_summary(round_index)
            assert summary["ok"] == summary["tasks"] == 2
        # Routed through the edges that received them; the cloud worker answered the cloud-routed ones.
        assert cloud.inference is not None
        assert cloud.inference.counts["generate_requests"] == cloud_answers
    finally:
        center.stop()
        for edge in edges:
            edge.stop()
        cloud.stop()


def test_rounds_refuse_the_oracle_router():
    with pytest.raises(Exception, match="hindsight"):
        load(CenterConfig, env={}, overrides=["router=oracle"])
