"""A local fleet runs rounds: real Mosquitto, center, two edges and a cloud node, tiny real models."""

import dataclasses

import pytest
import torch

from cloud_node.config import CloudConfig
from cloud_node.service import CloudService
from edge_node.config import EdgeConfig
from edge_node.service import EdgeService
from fleet_center.center_db import CenterDb
from fleet_center.config import CenterConfig
from fleet_center.service import CenterService
from models.tiny import write_tiny_model
from runtime.settings import load
from tests.conftest import wait_until


@pytest.fixture
def store(tmp_path):
    torch.set_num_threads(1)
    root = tmp_path / "store"
    write_tiny_model(root, "tiny-a", seed=0, layers=2, hidden=64)
    write_tiny_model(root, "tiny-b", seed=1, layers=2, hidden=32)  # smaller and faster: caching should want it
    return root


def edge_config(mosquitto, store, tmp_path, node_id):
    config = load(EdgeConfig, env={}, overrides=[
        f"node_id={node_id}", f"model_store={store}", f"state_dir={tmp_path / 'state'}", "http_port=0",
        "heartbeat_interval_s=0.5", "max_loaded_models=3",
    ])
    return dataclasses.replace(config, bus=mosquitto.bus_config())


def center_config(mosquitto, store, tmp_path, total_rounds):
    config = load(CenterConfig, env={}, overrides=[
        f"state_dir={tmp_path / 'center'}", "heartbeat_timeout_s=3", "tick_interval_s=0.2", "artifacts_port=0",
        "record_metrics=false",  # never into an InfluxDB a developer may be running on the default port
        f"rounds.total_rounds={total_rounds}", "rounds.round_interval_s=0", "rounds.tasks_per_edge=1",
        "rounds.arrival=fixed", "rounds.models=tiny-a,tiny-b", "rounds.initial_model=tiny-a",
        f"rounds.model_store={store}", "rounds.max_new_tokens=6", "rounds.task_deadline_s=20",
        "rounds.deploy_timeout_s=30", "rounds.min_edges=2", "rounds.wait_for_edges_s=20",
    ])
    return dataclasses.replace(config, bus=mosquitto.bus_config())


def start_fleet(mosquitto, store, tmp_path, own_stores=False):
    """Two edges (sharing the center's store, or each with its own holding only tiny-a) and a cloud."""
    edges = []
    for node in ("pi-01", "pi-02"):
        edge_store = store
        if own_stores:
            edge_store = tmp_path / f"store-{node}"
            write_tiny_model(edge_store, "tiny-a", seed=0, layers=2, hidden=64)
        edges.append(EdgeService(edge_config(mosquitto, edge_store, tmp_path, node)).start())
    cloud_config = dataclasses.replace(CloudConfig(), node_id="cloud-1", bus=mosquitto.bus_config(),
                                       model_store=str(store), state_dir=str(tmp_path / "state"),
                                       heartbeat_interval_s=0.5)
    cloud = CloudService(cloud_config).start()
    return edges, cloud


def test_22_rounds_with_a_caching_round_and_a_deployment(mosquitto, store, tmp_path):
    edges, cloud = start_fleet(mosquitto, store, tmp_path, own_stores=True)
    center = CenterService(center_config(mosquitto, store, tmp_path, total_rounds=22)).start()
    try:
        db = center.db
        assert wait_until(lambda: len(db.finished_rounds()) == 22, 240)
        caching = db.round_summary(20)
        assert caching["kind"] == "caching"
        assert caching["deployments"] >= 1 and caching["ready"] == caching["deployments"]
        # The faster model was deployed where the plan wanted it (one edge may be enough for the demand).
        assert any("tiny-b" in models for models in caching["placement"].values())
        assert caching["changes"]
        for round_index in (0, 21):
            summary = db.round_summary(round_index)
            assert summary["kind"] == "offloading"
            assert summary["ok"] == summary["tasks"] == 2  # one task per edge per round, all answered
        # tiny-b was downloaded from the center's artifact server, verified, and is resident where placed
        for edge in edges:
            if "tiny-b" in caching["placement"][edge.node_id]:
                assert edge.store.has("tiny-b")
                edge.store.verify("tiny-b")
                assert "tiny-b" in {m.model_id for m in edge.loaded_models()}
    finally:
        center.stop()
        for node in [*edges, cloud]:
            node.stop()


def test_edge_killed_mid_round_loses_no_task(mosquitto, store, tmp_path):
    edges, cloud = start_fleet(mosquitto, store, tmp_path)
    config = center_config(mosquitto, store, tmp_path, total_rounds=6)
    config = dataclasses.replace(config, rounds=dataclasses.replace(config.rounds, tasks_per_edge=4))
    center = CenterService(config).start()
    try:
        assert wait_until(lambda: any(t.status == "dispatched" and t.assigned_node == "pi-02"
                                      for t in center.db.tasks_of(center.db.next_round())), 60)
        edges[1].presence.crash()  # vanishes: its Will tells the center, its tasks must move
        edges[1].stop_worker()
        assert wait_until(lambda: len(center.db.finished_rounds()) == 6, 180)
        for round_index in range(6):
            tasks = center.db.tasks_of(round_index)
            results = center.db.results_of(round_index)
            assert len(tasks) in (4, 8)  # 4 arrive per online edge; pi-02 is gone after the kill
            assert len(results) == len(tasks)
            assert len({r[0] for r in results}) == len(results)  # never counted twice
            assert all(r[5] == "ok" for r in results)
        moved = [t for n in range(6) for t in center.db.tasks_of(n) if t.attempts > 1]
        assert moved and all(t.assigned_node != "pi-02" for t in moved)  # pi-02's tasks were reassigned
    finally:
        center.stop()
        for node in [edges[0], cloud]:
            node.stop()


def test_restarted_center_resumes_without_rerunning_tasks(mosquitto, store, tmp_path):
    edges, cloud = start_fleet(mosquitto, store, tmp_path)
    first = CenterService(center_config(mosquitto, store, tmp_path, total_rounds=8)).start()
    try:
        assert wait_until(lambda: len(first.db.finished_rounds()) >= 3, 90)
    finally:
        first.stop()
    done_before = {r[0]: r for n in range(8) for r in CenterDb(tmp_path / "center" / "center.sqlite").results_of(n)}
    second = CenterService(center_config(mosquitto, store, tmp_path, total_rounds=8)).start()
    try:
        assert wait_until(lambda: len(second.db.finished_rounds()) == 8, 120)
        after = {r[0]: r for n in range(8) for r in second.db.results_of(n)}
        for instance_id, row in done_before.items():
            assert after[instance_id] == row  # finished work was kept, not redone
        assert len(after) == 16
    finally:
        second.stop()
        for node in [*edges, cloud]:
            node.stop()
