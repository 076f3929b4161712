"""Two-level broker topology: edges on two site brokers bridged to a core broker (center, cloud); rounds and
collaborative sessions run unchanged (real Mosquittos, tiny real models)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from broker.bridging import two_level
from broker.launcher import BrokerConfig, LocalBroker, free_port
from cloud_node.config import CloudConfig
from cloud_node.service import CloudService
from edge_node.service import EdgeService
from fleet_center.service import CenterService
from tests.conftest import RunningBroker, wait_until
from tests.integration.test_rounds import center_config, edge_config, store  # noqa: F401 - `store` is a fixture

SITES = {"site-a": ("pi-01",), "site-b": ("pi-02",)}


@pytest.fixture
def bridged(tmp_path: Path):
    """(core, {site: broker}) as RunningBrokers sharing one secrets directory."""
    secrets = tmp_path / "secrets"
    topology = two_level(tmp_path, free_port(), {name: free_port() for name in SITES}, SITES, ("cloud-1",), str(secrets),
                         keepalive_s=2)
    started = [LocalBroker(BrokerConfig(**topology.core)).start()]
    try:
        sites = {}
        for name, settings in topology.sites.items():
            started.append(LocalBroker(BrokerConfig(**settings)).start())
            sites[name] = RunningBroker(started[-1], secrets)
        yield RunningBroker(started[0], secrets), sites
    finally:
        for broker in reversed(started):
            broker.stop()


def test_rounds_and_collaborative_sessions_run_with_edges_on_two_site_brokers(bridged, store, tmp_path):  # noqa: F811
    core, sites = bridged
    edges = [EdgeService(edge_config(sites[site], store, tmp_path, node)).start()
             for site, nodes in SITES.items() for node in nodes]
    cloud = CloudService(CloudConfig(node_id="cloud-1", bus=core.bus_config(), model_store=str(store),
                                     state_dir=str(tmp_path / "state"), heartbeat_interval_s=0.5)).start()
    config = center_config(core, store, tmp_path, total_rounds=3)
    center = CenterService(dataclasses.replace(config, rounds=dataclasses.replace(
        config.rounds, edge_mode="collaborative"))).start()
    try:
        assert wait_until(lambda: len(center.db.finished_rounds()) == 3, 180)
        for round_index in range(3):
            summary = center.db.round_summary(round_index)
            assert summary["ok"] == summary["tasks"] == 2  # one task per edge, each answered
        assert {e.node_id for e in edges} <= set(center.membership.snapshot().nodes)
        # Collaborative: the edges' tokens came from the cloud worker on the core broker, across the bridges.
        assert cloud.inference.counts["tokens_served"] > 0
    finally:
        center.stop()
        for edge in edges:
            edge.stop()
        cloud.stop()


def test_edge_death_on_a_site_reaches_the_center_on_the_core(bridged, store, tmp_path):  # noqa: F811
    core, sites = bridged
    config = dataclasses.replace(center_config(core, store, tmp_path, total_rounds=0), run_rounds=False)
    center = CenterService(config).start()
    edge = EdgeService(edge_config(sites["site-b"], store, tmp_path, "pi-02")).start()
    try:
        assert wait_until(lambda: "pi-02" in {n.node_id for n in center.membership.snapshot().online()}, 20)
        edge.presence.crash()  # no goodbye: the site broker's keep-alive check sends the Will, the bridge carries it
        assert wait_until(lambda: "pi-02" not in {n.node_id for n in center.membership.snapshot().online()}, 15)
    finally:
        edge.stop_worker()
        edge.http.stop()
        center.stop()
