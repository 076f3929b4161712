"""Runs a local Mosquitto from the project's `mosquitto.conf` with generated passwords and ACLs."""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from broker.acl import acl_text
from broker.bridging import bridge_acl_lines, bridge_lines
from broker.credentials import (
    load_or_create_secret,
    node_password,
    write_node_password_files,
    write_password_file,
)
from broker.errors import BusError
from runtime.processes import kill_process, stop_process, wait_ready
from runtime.settings import FLEET_DIR, REPO_ROOT, check
from security.tls import ensure_ca, issue

logger = logging.getLogger(__name__)

BASE_CONFIG = REPO_ROOT / "mosquitto.conf"


@dataclass(frozen=True)
class BrokerConfig:
    """A local broker: where it listens, who may connect, where it keeps its state."""

    bind: str = "127.0.0.1"  # listen address; 0.0.0.0 to let Pis on the LAN connect
    port: int = 1883  # MQTT TCP port
    state_dir: str = str(FLEET_DIR / "broker")  # generated config, password file, ACL, persistence
    secrets_dir: str = str(FLEET_DIR / "secrets")  # fleet secret and one <node>.password per node
    center_user: str = "center"
    cloud_users: tuple[str, ...] = ("cloud-1",)
    edge_users: tuple[str, ...] = ("pi-01", "pi-02", "pi-03")
    allow_anonymous: bool = False  # only for throwaway benchmarks
    mosquitto_binary: str = "mosquitto"
    start_timeout_s: float = 10.0  # wait this long for the port to accept connections
    # TLS listener for nodes on other hosts (docs/security.md); the plain listener above stays for loopback.
    tls_port: int = 0  # MQTT over TLS port (8883 by convention); 0 = no TLS listener
    tls_bind: str = "0.0.0.0"  # TLS listen address
    tls_hosts: tuple[str, ...] = ("localhost", "127.0.0.1")  # names/addresses the broker certificate is valid for
    tls_client_certs: bool = False  # also require a client certificate signed by the fleet CA (besides the password)
    tls_dir: str = str(FLEET_DIR / "tls")  # fleet CA, broker certificate, one <node>.crt/.key per node
    # Two-level topology (broker/bridging.py, docs/scaling.md)
    bridge_users: tuple[str, ...] = ()  # core broker: the site bridges that may connect (they speak for their edges)
    core_address: str = ""  # site broker: host:port of the core broker to bridge to; empty = no bridge
    site_name: str = ""  # site broker: its name, which is its bridge's user at the core
    bridge_keepalive_s: int = 5  # site broker: keep-alive of the bridge connection

    def __post_init__(self) -> None:
        check(0 < self.port < 65536, "broker.port", f"{self.port} is not a TCP port")
        check(0 <= self.tls_port < 65536, "broker.tls_port", f"{self.tls_port} is not a TCP port")
        check(self.tls_port != self.port, "broker.tls_port", "must differ from broker.port")
        check(not self.core_address or bool(self.site_name), "broker.site_name", "a site broker needs a name")
        check(bool(self.center_user), "broker.center_user", "must not be empty")


@dataclass
class LocalBroker:
    """A Mosquitto child process; `start()`, `stop()`, `restart()` (tests restart it to test reconnects)."""

    config: BrokerConfig
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def revoked(self) -> set[str]:
        """Users whose password was withdrawn (`<state_dir>/revoked`, one per line): they stay out across restarts."""
        path = Path(self.config.state_dir) / "revoked"
        return set(path.read_text().split()) if path.exists() else set()

    @property
    def users(self) -> list[str]:
        users = [self.config.center_user, *self.config.cloud_users, *self.config.edge_users, *self.config.bridge_users]
        revoked = self.revoked
        return [user for user in users if user not in revoked]

    def revoke(self, user: str) -> None:
        """Withdraw `user`'s password: a running Mosquitto (ours, or the one in the state directory's pid file)
        rereads its password file and drops the user's live session at once."""
        state = Path(self.config.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        with (state / "revoked").open("a") as handle:
            handle.write(user + "\n")
        write_password_file(state / "passwords", self.passwords())
        pid = self.process.pid if self.process is not None and self.process.poll() is None else _pid_from(state)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)  # reload: re-checks every connected client's credentials
        logger.info("revoked broker user %s%s", user, "" if pid else " (no running broker: applies at its start)")

    def passwords(self) -> dict[str, str]:
        secret = load_or_create_secret(Path(self.config.secrets_dir) / "fleet.key")
        return {user: node_password(secret, user) for user in self.users}

    def write_files(self) -> Path:
        """Generate password file, ACL and the runtime config; returns the runtime config path."""
        state = Path(self.config.state_dir)
        (state / "data").mkdir(parents=True, exist_ok=True)
        passwords = self.passwords()
        write_password_file(state / "passwords", passwords)
        write_node_password_files(Path(self.config.secrets_dir), passwords)
        acl = acl_text(self.config.center_user, self.config.cloud_users, self.config.edge_users)
        (state / "acl").write_text(acl + "\n".join(bridge_acl_lines(self.config.bridge_users)) + "\n")
        runtime = BASE_CONFIG.read_text() + "\n".join(
            [
                "",
                "# ---- appended by broker/launcher.py ----",
                # Run as whoever started us: as root, Mosquitto would otherwise switch to user `mosquitto`,
                # which cannot read the mode-600 password file this launcher just wrote.
                f"user {getpass.getuser()}",
                f"listener {self.config.port} {self.config.bind}",
                f"allow_anonymous {'true' if self.config.allow_anonymous else 'false'}",
                f"password_file {state / 'passwords'}",
                f"acl_file {state / 'acl'}",
                f"persistence_location {state / 'data'}/",
                f"pid_file {state / 'mosquitto.pid'}",
                *self._tls_lines(),
                *self._bridge_lines(),
                "",
            ]
        )
        path = state / "mosquitto.conf"
        path.write_text(runtime)
        return path

    def _bridge_lines(self) -> list[str]:
        """A site broker's bridge to the core; its password is the one the core derives for the site's name."""
        if not self.config.core_address:
            return []
        secret = load_or_create_secret(Path(self.config.secrets_dir) / "fleet.key")
        return bridge_lines(self.config.site_name, self.config.core_address, node_password(secret, self.config.site_name),
                            self.config.edge_users, self.config.bridge_keepalive_s)

    def _tls_lines(self) -> list[str]:
        """The TLS listener's lines, creating the CA, the broker certificate and node certificates as needed."""
        if not self.config.tls_port:
            return []
        ca = ensure_ca(self.config.tls_dir)
        server = issue(self.config.tls_dir, "broker", server=True, hosts=self.config.tls_hosts)
        if self.config.tls_client_certs:
            for user in self.users:
                issue(self.config.tls_dir, user, server=False)
        return [
            f"listener {self.config.tls_port} {self.config.tls_bind}",
            f"cafile {ca.cert}",
            f"certfile {server.cert}",
            f"keyfile {server.key}",
            "tls_version tlsv1.2",
            f"require_certificate {'true' if self.config.tls_client_certs else 'false'}",
        ]

    def start(self, stdout: int | None = None) -> LocalBroker:
        """Start Mosquitto and wait until it accepts connections. Raises BusError."""
        binary = shutil.which(self.config.mosquitto_binary) or shutil.which(
            self.config.mosquitto_binary, path="/usr/sbin:/usr/local/sbin"
        )
        if binary is None:
            raise BusError("mosquitto is not installed (Debian package `mosquitto`; `make run` installs it)")
        config_path = self.write_files()
        # Own session: a Ctrl-C in the terminal must not kill the broker before the nodes said goodbye.
        self.process = subprocess.Popen(
            [binary, "-c", str(config_path)], stdout=stdout, stderr=stdout, start_new_session=True
        )
        wait_ready(self.process, lambda: _port_open(self.config.bind, self.config.port), self.config.start_timeout_s,
                   f"mosquitto (config {config_path})", BusError, interval_s=0.05)
        logger.info("mosquitto listening on %s:%d", self.config.bind, self.config.port)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        stop_process(self.process, timeout_s)

    def kill(self) -> None:
        """Abrupt stop (no persistence flush), as a crash would be."""
        kill_process(self.process)

    def restart(self) -> LocalBroker:
        self.stop()
        return self.start()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pid_from(state: Path) -> int | None:
    """The pid a running Mosquitto wrote into the state directory, if that process is alive."""
    try:
        pid = int((state / "mosquitto.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _port_open(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    try:
        with socket.create_connection((target, port), timeout=0.2):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port nobody listens on right now (tests and benchmarks start brokers on one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
