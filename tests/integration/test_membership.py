"""Fleet membership end to end: real Mosquitto, real node presence, real center registry."""

import os
import signal
import subprocess
import sys

from broker import topics
from broker.client import BusClient
from broker.messages import NodeDeath
from broker.presence import NodePresence
from fleet_center.config import CenterConfig
from fleet_center.membership import FleetMembership
from runtime.capabilities import measure_capabilities
from tests.conftest import wait_until

CAPS = measure_capabilities()


def start_center(mosquitto, timeout_s=6.0):
    config = CenterConfig(bus=mosquitto.bus_config(), heartbeat_timeout_s=timeout_s, tick_interval_s=0.2)
    return FleetMembership(config).start()


def start_node(mosquitto, node_id, tmp_path, role="edge"):
    return NodePresence(node_id, role, mosquitto.bus_config(), heartbeat_interval_s=0.5, state_dir=tmp_path,
                        capabilities=CAPS).start()


def online(center):
    return sorted(n.node_id for n in center.snapshot().online())


def test_nodes_register_and_heartbeat(mosquitto, tmp_path):
    center = start_center(mosquitto)
    nodes = [start_node(mosquitto, node_id, tmp_path) for node_id in ("pi-01", "pi-02")]
    try:
        assert wait_until(lambda: online(center) == ["pi-01", "pi-02"])
        assert wait_until(lambda: center.snapshot().nodes["pi-01"].last_heartbeat is not None)
        beat = center.snapshot().nodes["pi-01"].last_heartbeat
        assert beat.cpu_percent >= 0 and 0 < beat.memory_percent <= 100
    finally:
        for node in nodes:
            node.stop()
        center.stop()


def test_clean_stop_marks_node_offline_at_once(mosquitto, tmp_path):
    center = start_center(mosquitto, timeout_s=60)
    node = start_node(mosquitto, "pi-01", tmp_path)
    try:
        assert wait_until(lambda: online(center) == ["pi-01"])
        node.stop()
        assert wait_until(lambda: online(center) == [], 3)
        assert center.snapshot().nodes["pi-01"].offline_reason == "death"
    finally:
        center.stop()


def test_killed_node_is_detected_by_last_will(mosquitto, tmp_path):
    center = start_center(mosquitto, timeout_s=60)  # long timeout: only the Will can explain offline
    script = (
        "import sys, time\n"
        "from broker.presence import NodePresence\n"
        "from broker.config import BusConfig\n"
        f"config = BusConfig(port={mosquitto.port}, keepalive_s=2, password_file={str(mosquitto.secrets_dir / '{node}.password')!r})\n"
        f"NodePresence('pi-03', 'edge', config, heartbeat_interval_s=0.5, state_dir=__import__('pathlib').Path({str(tmp_path)!r})).start()\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    try:
        assert wait_until(lambda: online(center) == ["pi-03"], 15)
        process.send_signal(signal.SIGKILL)
        # The broker notices the dead socket within 1.5 x keep-alive (3 s) and publishes the Will.
        assert wait_until(lambda: online(center) == [], 6)
        assert center.snapshot().nodes["pi-03"].offline_reason == "death"
    finally:
        process.kill()
        center.stop()


def test_nodes_wait_for_a_late_center_then_register(mosquitto, tmp_path):
    nodes = [start_node(mosquitto, node_id, tmp_path) for node_id in ("pi-01", "pi-02")]
    try:
        wait_until(lambda: False, 0.5)
        assert not any(node.center_online.is_set() for node in nodes)
        center = start_center(mosquitto)
        assert wait_until(lambda: online(center) == ["pi-01", "pi-02"])
        center.stop()
    finally:
        for node in nodes:
            node.stop()


def test_restarted_center_rebuilds_fleet_from_retained_births_and_deaths(mosquitto, tmp_path):
    first = start_center(mosquitto)
    nodes = [start_node(mosquitto, node_id, tmp_path) for node_id in ("pi-01", "pi-02", "pi-03")]
    try:
        assert wait_until(lambda: online(first) == ["pi-01", "pi-02", "pi-03"])
        first.stop()
        nodes.pop().stop()  # pi-03 dies while no center runs: its retained death must beat its retained birth
        second = FleetMembership(CenterConfig(bus=mosquitto.bus_config(), heartbeat_timeout_s=60))
        second.start()
        assert wait_until(lambda: online(second) == ["pi-01", "pi-02"])
        assert not second.snapshot().nodes["pi-03"].online
        second.stop()
    finally:
        for node in nodes:
            node.stop()


def test_stale_death_is_ignored(mosquitto, tmp_path):
    center = start_center(mosquitto)
    node = start_node(mosquitto, "pi-01", tmp_path)
    try:
        assert wait_until(lambda: online(center) == ["pi-01"])
        with BusClient("pi-01-old", mosquitto.bus_config(None, username="pi-01", password=_password(mosquitto, "pi-01"))) as old:
            old.publish(topics.NODE_DEATH, NodeDeath(node_id="pi-01", bd_seq=node.bd_seq - 1), wait_s=5, node="pi-01")
        wait_until(lambda: False, 0.5)
        assert online(center) == ["pi-01"]
    finally:
        node.stop()
        center.stop()


def test_nodes_reregister_after_broker_restart(mosquitto, tmp_path):
    center = start_center(mosquitto)
    node = start_node(mosquitto, "pi-01", tmp_path)
    try:
        assert wait_until(lambda: online(center) == ["pi-01"])
        first_bd_seq = node.bd_seq
        mosquitto.broker.kill()
        mosquitto.broker.start()
        assert wait_until(lambda: node.bus.connected and center.bus.connected, 10)
        assert wait_until(lambda: center.snapshot().nodes["pi-01"].bd_seq > first_bd_seq, 10)
        assert wait_until(lambda: online(center) == ["pi-01"], 10)
    finally:
        node.stop()
        center.stop()


def test_node_and_center_survive_garbage_on_every_topic(mosquitto, tmp_path):
    center = start_center(mosquitto)
    node = start_node(mosquitto, "pi-01", tmp_path)
    garbage = [b"", b"\xff\xfe", b"\x81\xa1t\xa4nope", b"x" * 300_000]
    try:
        assert wait_until(lambda: online(center) == ["pi-01"])
        with BusClient("center-2", mosquitto.bus_config(None, username="center", password=_password(mosquitto, "center"))) as sender:
            for payload in garbage:  # everything the node subscribes to
                sender.publish_bytes(topics.NODE_COMMAND.topic(node="pi-01"), payload, wait_s=5)
                sender.publish_bytes(topics.CENTER_STATE.topic(), payload or b"\x00", wait_s=5)
        with BusClient("pi-01-x", mosquitto.bus_config(None, username="pi-01", password=_password(mosquitto, "pi-01"))) as sender:
            for payload in garbage:  # everything the center subscribes to
                for spec in (topics.NODE_BIRTH, topics.NODE_DEATH, topics.NODE_HEARTBEAT):
                    sender.publish_bytes(spec.topic(node="pi-01"), payload, wait_s=5)
        assert wait_until(lambda: node.bus.stats.counts["malformed"] >= 2 * (len(garbage) - 1))
        assert wait_until(lambda: center.bus.stats.counts["malformed"] >= 3 * (len(garbage) - 1))
        def last_seq():
            beat = center.snapshot().nodes["pi-01"].last_heartbeat
            return beat.seq if beat else 0

        before = last_seq()
        assert wait_until(lambda: last_seq() > before + 1)  # heartbeats still flow after the garbage
        assert online(center) == ["pi-01"]
    finally:
        node.stop()
        center.stop()


def _password(mosquitto, user):
    return (mosquitto.secrets_dir / f"{user}.password").read_text().strip()
