"""Emulated deployment over real sockets: the link proxy, a node on a wan link through Mosquitto, CPU quotas."""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from torch import nn

from broker import topics
from broker.client import BusClient
from broker.messages import CenterState
from broker.messages.inference import SessionOpen, SessionOpened
from emulation.cpu_quota import CGROUP_PARENT, DEFAULT_CGROUP_ROOT, limit_cpu
from emulation.link_profiles import Direction, LinkProfile, get_profile
from emulation.link_proxy import LinkProxy, ProxyConfig

FAST = LinkProfile("fast", Direction(0.005, 50e6), Direction(0.002, 80e6))  # delayed and paced, but quick
UNLIMITED = LinkProfile("unlimited", Direction(), Direction())


class Upstream:
    """A TCP server standing in for the broker: records what it receives, sends what it is told, one client."""

    def __init__(self, send_bytes: bytes = b"", read_delay_s: float = 0.0, close_after_send: bool = False,
                 expect_bytes: int = 0):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = bytearray()
        self.eof = threading.Event()
        self.connected = threading.Event()
        self._send_bytes, self._read_delay_s, self._close_after_send = send_bytes, read_delay_s, close_after_send
        self._expect_bytes = expect_bytes  # with close_after_send: close only once this much arrived
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.server.accept()
        self.connected.set()
        if self._send_bytes:
            threading.Thread(target=self._send, args=(conn,), daemon=True).start()
        with conn:
            while True:
                if self._read_delay_s:
                    time.sleep(self._read_delay_s)
                try:
                    data = conn.recv(1024 if self._read_delay_s else 1 << 20)
                except OSError:
                    data = b""
                if not data:
                    self.eof.set()
                    return
                self.received += data

    def _send(self, conn):
        conn.sendall(self._send_bytes)
        if self._close_after_send:
            deadline = time.monotonic() + 30
            while len(self.received) < self._expect_bytes and time.monotonic() < deadline:
                time.sleep(0.01)
            conn.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.server.close()


def receive_all(sock: socket.socket, timeout_s: float = 30.0) -> bytes:
    """Everything until the peer closes."""
    sock.settimeout(timeout_s)
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


def test_bytes_pass_unchanged_and_in_order_in_both_directions():
    rng = random.Random(7)
    up_bytes, down_bytes = rng.randbytes(4_000_000), rng.randbytes(3_000_000)
    upstream = Upstream(send_bytes=down_bytes, close_after_send=True, expect_bytes=len(up_bytes))
    with LinkProxy(FAST, "127.0.0.1", upstream.port, config=ProxyConfig(chunk_bytes=7_000)) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port))
        sender = threading.Thread(target=client.sendall, args=(up_bytes,))
        sender.start()
        received_down = receive_all(client)
        sender.join(30)
        client.close()
        assert upstream.eof.wait(30)
    upstream.close()
    assert received_down == down_bytes
    assert bytes(upstream.received) == up_bytes


def test_slow_reader_does_not_make_the_proxy_buffer_past_its_cap():
    cap_bytes = 64 * 1024
    upstream = Upstream(read_delay_s=0.01)  # 1 KB per 10 ms: 100 KB/s
    config = ProxyConfig(buffer_bytes=cap_bytes, chunk_bytes=4096)
    with LinkProxy(UNLIMITED, "127.0.0.1", upstream.port, config=config) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port))
        client.settimeout(0.2)
        sent_bytes, blocked = 0, False
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # push until the sender blocks: TCP windows full, proxy not reading
            try:
                sent_bytes += client.send(b"x" * 65536)
            except TimeoutError:
                blocked = True
                break
        assert blocked, f"the sender never blocked after {sent_bytes} bytes"
        assert proxy.pumps[0].peak_buffered_bytes <= cap_bytes
        assert proxy.buffered_bytes <= cap_bytes
        client.close()
    upstream.close()


def test_closing_the_client_closes_the_upstream_after_its_bytes():
    upstream = Upstream()
    with LinkProxy(FAST, "127.0.0.1", upstream.port) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port))
        client.sendall(b"last words")
        client.close()
        assert upstream.eof.wait(10)
    upstream.close()
    assert bytes(upstream.received) == b"last words"


def test_closing_the_upstream_closes_the_client_after_its_bytes():
    upstream = Upstream(send_bytes=b"goodbye" * 10_000, close_after_send=True)
    with LinkProxy(FAST, "127.0.0.1", upstream.port) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port))
        assert receive_all(client, timeout_s=10) == b"goodbye" * 10_000
        client.close()
    upstream.close()


def test_proxy_runs_as_a_process_and_prints_its_port():
    upstream = Upstream(send_bytes=b"hello", close_after_send=True, expect_bytes=2)
    process = subprocess.Popen(
        [sys.executable, "-m", "emulation.link_proxy", "--profile", "wan", "--listen", "127.0.0.1:0",
         "--upstream", f"127.0.0.1:{upstream.port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=Path(__file__).resolve().parents[2])
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"hi")
        assert receive_all(client, timeout_s=10) == b"hello"
        client.close()
        assert upstream.eof.wait(10)
        assert bytes(upstream.received) == b"hi"
    finally:
        process.terminate()
        process.wait(10)
        upstream.close()


def test_proxy_process_refuses_an_unknown_profile():
    result = subprocess.run([sys.executable, "-m", "emulation.link_proxy", "--profile", "moon"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert result.returncode == 2
    assert "--profile: unknown link profile 'moon'" in result.stderr


def test_node_on_a_wan_link_gets_replies_through_mosquitto_a_round_trip_later(mosquitto):
    request = SessionOpen(session_id="s1", edge_id="pi-01", model_id="m", split_layer=20, hidden_size=576)
    cloud = BusClient("cloud-1", mosquitto.bus_config("cloud-1")).connect()
    edge = BusClient("pi-01", mosquitto.bus_config("pi-01", link_profile="wan")).connect()
    try:
        cloud.subscribe(topics.INFER_OPEN, lambda envelope: cloud.reply(envelope, SessionOpened(
            session_id="s1", worker_id="cloud-1", ttl_s=60.0, max_positions=4096)), shared_group="cloud", wait_s=5)
        round_trips_s = []
        for _ in range(3):
            started = time.perf_counter()
            reply = edge.request(topics.INFER_OPEN, request, timeout_s=5)
            round_trips_s.append(time.perf_counter() - started)
            assert reply.message.worker_id == "cloud-1"
    finally:
        edge.close()
        cloud.close()
    assert min(round_trips_s) >= get_profile("wan").rtt_s
    assert not [t for t in threading.enumerate() if t.name.startswith("link-proxy")], "close() left the proxy running"


def cgroup_writable() -> bool:
    return os.geteuid() == 0 and os.access(DEFAULT_CGROUP_ROOT / "cpu.cfs_quota_us", os.W_OK)


@pytest.mark.skipif(not cgroup_writable(), reason="needs root and a writable cgroup v1 cpu hierarchy")
def test_cpu_quota_moves_a_child_process_into_its_cgroup_and_release_removes_it():
    name = f"test-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        limit = limit_cpu(0.25, name, pid=child.pid)
        assert limit.mechanism == "cgroup"
        assert f"/{CGROUP_PARENT}/{name}" in Path(f"/proc/{child.pid}/cgroup").read_text()
        assert (DEFAULT_CGROUP_ROOT / CGROUP_PARENT / name / "cpu.cfs_quota_us").read_text().strip() == "2500"
        limit.release()
        assert f"/{CGROUP_PARENT}/{name}" not in Path(f"/proc/{child.pid}/cgroup").read_text()
        assert not (DEFAULT_CGROUP_ROOT / CGROUP_PARENT / name).exists()
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not cgroup_writable(), reason="needs root and a writable cgroup v1 cpu hierarchy")
def test_a_process_that_puts_itself_under_a_quota_stops_its_kernel_workers_polling():
    script = (
        "import uuid\n"
        "from emulation.cpu_quota import limit_cpu\n"
        "from models.lowbit import native\n"
        "before = native.worker_spin()\n"
        "limit = limit_cpu(0.5, f'test-{uuid.uuid4().hex[:8]}')\n"
        "print(before, native.worker_spin(), limit.mechanism)\n"
        "limit.release()\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "EDGEFLEET_KERNEL_SPIN_US"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "0", "cgroup"]


def test_unwritable_cgroup_root_falls_back_to_layer_delays_with_a_warning(tmp_path, caplog):
    cgroup_root = tmp_path / "cpu"
    cgroup_root.mkdir()
    (cgroup_root / "cpu.cfs_quota_us").write_text("-1\n")  # looks like a cgroup hierarchy, but is not one
    cgroup_root.chmod(0o555)
    try:
        with caplog.at_level(logging.WARNING, logger="emulation.cpu_quota"):
            limit = limit_cpu(0.25, "pi-01", cgroup_root=cgroup_root)
    finally:
        cgroup_root.chmod(0o755)
    layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(4))
    limit.install_on_layers(layers)
    assert limit.mechanism == "layer_delay"
    assert "falling back to a per-layer delay" in caplog.text
    assert all(len(layer._forward_hooks) == 1 and len(layer._forward_pre_hooks) == 1 for layer in layers)
    limit.release()
    assert all(not layer._forward_hooks for layer in layers)
    assert f"/{CGROUP_PARENT}/" not in Path("/proc/self/cgroup").read_text()


@pytest.mark.skipif(not cgroup_writable(), reason="needs root and a writable cgroup v1 cpu hierarchy")
def test_edge_process_on_an_emulated_pi_and_wan_link_joins_the_fleet_and_cleans_up(mosquitto, tmp_path):
    births = threading.Event()
    center = BusClient("center", mosquitto.bus_config("center"))
    center.subscribe(topics.NODE_BIRTH, lambda envelope: births.set(), node="pi-02")
    center.connect()
    center.publish(topics.CENTER_STATE, CenterState(online=True, center_id="center", timestamp=time.time()), wait_s=5)
    settings = [f"bus.port={mosquitto.port}", f"bus.password_file={mosquitto.secrets_dir}/{{node}}.password",
                "bus.link_profile=wan", "cpu_quota=0.5", "http_port=0", f"state_dir={tmp_path}",
                f"model_store={tmp_path / 'models'}"]
    edge = subprocess.Popen([sys.executable, "-m", "edge_node", "--node-id", "pi-02",
                             *[arg for setting in settings for arg in ("--set", setting)]],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cgroup_dir = DEFAULT_CGROUP_ROOT / CGROUP_PARENT / "pi-02"
    try:
        assert births.wait(60), "the edge never published its birth through the wan link"
        assert f"/{CGROUP_PARENT}/pi-02" in Path(f"/proc/{edge.pid}/cgroup").read_text()
        assert (cgroup_dir / "cpu.cfs_quota_us").read_text().strip() == "5000"
    finally:
        edge.terminate()
        assert edge.wait(30) == 0
        center.close()
    assert not cgroup_dir.exists()
