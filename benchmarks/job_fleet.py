"""The benchmark job's fleet: a real Mosquitto, one cloud worker and N edges on free ports, no center.

The job is the client: it posts every query to an edge's `POST /perform_task` (the edge forwards routed
queries to the cloud over the broker). Every child's pid goes to `<workdir>/pids` as it starts, so a
job killed with SIGKILL leaves a list of what to clean up (the self-test reads it).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from broker.launcher import BrokerConfig, LocalBroker, free_port
from runtime.settings import REPO_ROOT

logger = logging.getLogger(__name__)

CLOUD_ID = "cloud-1"


@dataclass
class JobFleet:
    workdir: Path
    edges: int = 2
    link_profile: str = "lan"  # emulation/link_profiles.py, between each edge and the broker
    edge_cpu_quota: float = 0.0  # fraction of a core per edge; 0 = unlimited
    start_timeout_s: float = 180.0
    broker: LocalBroker | None = field(default=None, init=False)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    edge_urls: list[str] = field(default_factory=list, init=False)

    @property
    def edge_ids(self) -> tuple[str, ...]:
        return tuple(f"pi-{i:02d}" for i in range(1, self.edges + 1))

    def start(self) -> JobFleet:
        """Start broker, cloud and edges; wait until every edge answers /health. Raises RuntimeError."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.broker = LocalBroker(BrokerConfig(port=port, edge_users=self.edge_ids, cloud_users=(CLOUD_ID,),
                                               state_dir=str(self.workdir / "broker")))
        self.broker.start(stdout=subprocess.DEVNULL)
        self._record(self.broker.process.pid if self.broker.process else 0)
        env = {**os.environ, "EDGEFLEET_BUS_PORT": str(port), "EDGEFLEET_EDGE_TORCH_THREADS": "1",
               "EDGEFLEET_CLOUD_TORCH_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
        self._spawn("cloud", ["cloud_node", "--node-id", CLOUD_ID, "--set", f"state_dir={self.workdir / 'state'}"], env)
        for node_id in self.edge_ids:
            http_port = free_port()
            self._spawn(node_id, ["edge_node", "--node-id", node_id, "--set", f"http_port={http_port}",
                                  "--set", f"state_dir={self.workdir / 'state'}",
                                  "--set", f"bus.link_profile={self.link_profile}",
                                  "--set", f"cpu_quota={self.edge_cpu_quota}"], env)
            self.edge_urls.append(f"http://127.0.0.1:{http_port}")
        self._wait_healthy()
        return self

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
        if self.broker is not None:
            self.broker.stop()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child writes to it until it exits
        child = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
        self.children.append(child)
        self._record(child.pid)

    def _record(self, pid: int) -> None:
        with open(self.workdir / "pids", "a") as pids:
            pids.write(f"{pid}\n")

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        pending = list(self.edge_urls)
        while pending:
            for child in self.children:
                if child.poll() is not None:
                    raise RuntimeError(f"a fleet process exited early (code {child.returncode}); logs in {self.workdir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"edges not healthy after {self.start_timeout_s:.0f} s: {pending}")
            for url in list(pending):
                try:
                    if httpx.get(f"{url}/health", timeout=2).json().get("bus_connected"):
                        pending.remove(url)
                except (httpx.HTTPError, ValueError):
                    pass
            time.sleep(0.5)


def kill_recorded(workdir: Path) -> int:
    """SIGKILL every pid a killed job recorded (its fleet); returns how many were still alive."""
    path = workdir / "pids"
    if not path.exists():
        return 0
    killed = 0
    for line in path.read_text().split():
        try:
            os.kill(int(line), signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, ValueError, PermissionError):
            pass
    path.unlink()
    return killed
