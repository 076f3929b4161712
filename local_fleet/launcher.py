"""`make run`: the whole fleet on this machine: Mosquitto, InfluxDB, center, one cloud node, three edge
nodes and the Streamlit dashboard at http://127.0.0.1:8501.

Each process's log lines go to this terminal with the process name in front; Ctrl-C (or SIGTERM)
stops the nodes first, then the center, then the broker.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

from broker.bridging import two_level
from broker.launcher import BrokerConfig, LocalBroker
from dashboards.config import DashboardConfig
from dashboards.launcher import DashboardProcess, DashboardServerConfig
from emulation.cpu_quota import check_quota
from emulation.link_profiles import get_profile
from metrics.launcher import LocalInfluxDB, ServerConfig
from runtime.settings import FLEET_DIR, REPO_ROOT, ConfigError

logger = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[str]


def _pump(name: str, stream: object) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sys.stdout.write(f"{name:>9} | {line}")
        sys.stdout.flush()


def _spawn(name: str, args: list[str], env: dict[str, str]) -> Child:
    process = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    assert process.stdout is not None
    threading.Thread(target=_pump, args=(name, process.stdout), daemon=True).start()
    return Child(name, process)


def _stop(children: list[Child], timeout_s: float = 10.0) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0f s; killing it", child.name, timeout_s)
            child.process.kill()


def _edge_emulation(args: argparse.Namespace) -> list[str]:
    """The edges' `--set` flags for an emulated link and CPU (`--set edge_link=wan` etc.). Raises ConfigError."""
    link, quota = args.edge_link, str(args.edge_cpu_quota)
    for item in args.set:
        key, _, value = item.partition("=")
        if key.strip() == "edge_link":
            link = value.strip()
        elif key.strip() == "edge_cpu_quota":
            quota = value.strip()
        else:
            raise ConfigError(f"{key.strip()}: unknown setting (known: edge_cpu_quota, edge_link)")
    get_profile(link, key="edge_link")
    try:
        problem = check_quota(float(quota))
    except ValueError:
        problem = f"expected a number, got {quota!r}"
    if problem:
        raise ConfigError(f"edge_cpu_quota: {problem}")
    return ["--set", f"bus.link_profile={link}", "--set", f"cpu_quota={quota}"]


def _start_brokers(port: int, sites: int, edge_ids: tuple[str, ...]) -> tuple[list[LocalBroker], dict[str, int]]:
    """One broker, or a core on `port` and `sites` site brokers bridged to it. Returns them and each edge's port."""
    quiet = subprocess.DEVNULL if os.environ.get("EDGEFLEET_QUIET_BROKER") else None
    if sites <= 0:
        return [LocalBroker(BrokerConfig(port=port, edge_users=edge_ids)).start(stdout=quiet)], dict.fromkeys(edge_ids, port)
    names = [f"site-{i}" for i in range(1, sites + 1)]
    edges_by_site = {name: edge_ids[i::sites] for i, name in enumerate(names)}
    topology = two_level(FLEET_DIR / "brokers", port, {name: port + i for i, name in enumerate(names, 1)},
                         edges_by_site, ("cloud-1",), str(FLEET_DIR / "secrets"))
    brokers = [LocalBroker(BrokerConfig(**topology.core)).start(stdout=quiet)]
    brokers += [LocalBroker(BrokerConfig(**topology.sites[name])).start(stdout=quiet) for name in names]
    ports = {edge: int(topology.sites[name]["port"]) for name, edges in edges_by_site.items() for edge in edges}
    logger.info("brokers: core on %d, %s", port, ", ".join(f"{n} on {topology.sites[n]['port']}" for n in names))
    return brokers, ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_fleet", description=__doc__)
    parser.add_argument("--edges", type=int, default=3, help="number of edge nodes")
    parser.add_argument("--port", type=int, default=1883, help="broker port (the core broker's with --sites)")
    parser.add_argument("--sites", type=int, default=0, help="site brokers bridged to a core broker, edges spread "
                        "over them (ports --port + 1 ...; docs/scaling.md); 0 = one broker")
    parser.add_argument("--edge-http-port", type=int, default=8081, help="HTTP port of the first edge; the next get +1")
    parser.add_argument("--edge-mode", default="collaborative", choices=("standalone", "collaborative", "speculative"),
                        help="how edges run round tasks")
    parser.add_argument("--cloud-latency-s", type=float, default=3.0, help="modelled latency of a cloud task")
    parser.add_argument("--rounds", type=int, default=0, help="rounds the center runs; 0 = keep going")
    parser.add_argument("--influx-port", type=int, default=8086, help="InfluxDB HTTP port")
    parser.add_argument("--dashboard-port", type=int, default=8501, help="Streamlit dashboard port")
    parser.add_argument("--edge-link", default="lan", help="link profile between each edge and the broker: "
                        "lan, wan or cellular (docs/emulation.md)")
    parser.add_argument("--edge-cpu-quota", type=float, default=0.0,
                        help="fraction of one core each edge may use (0.25 ~ a Raspberry Pi); 0 = unlimited")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="edge_link=wan or edge_cpu_quota=0.25 (the same as the flags)")
    args = parser.parse_args(argv)
    try:
        edge_settings = _edge_emulation(args)
    except ConfigError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s    fleet | %(message)s")
    edge_ids = tuple(f"pi-{i:02d}" for i in range(1, args.edges + 1))
    brokers, edge_ports = _start_brokers(args.port, args.sites, edge_ids)
    influx = LocalInfluxDB(ServerConfig(port=args.influx_port)).start()
    dashboard = DashboardProcess(DashboardServerConfig(port=args.dashboard_port),
                                 DashboardConfig(url=influx.url), log_path=str(FLEET_DIR / "dashboard.log"))
    # One torch thread per node: five processes share this host's cores (see edge_node/config.py).
    env = {**os.environ, "EDGEFLEET_BUS_PORT": str(args.port), "EDGEFLEET_CENTER_METRICS_STORE_URL": influx.url,
           "EDGEFLEET_ROUNDS_TOTAL_ROUNDS": str(args.rounds), "EDGEFLEET_ROUNDS_EDGE_MODE": args.edge_mode,
           # The "cloud" here shares this host's cores; price it as the remote machine it stands for
           # (WAN round trip + admission), or the scheduler sends it everything and the edges idle.
           "EDGEFLEET_ROUNDS_CLOUD_LATENCY_S": str(args.cloud_latency_s), "EDGEFLEET_EDGE_TORCH_THREADS": "1",
           "EDGEFLEET_CLOUD_TORCH_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    nodes: list[Child] = []
    center = _spawn("center", ["fleet_center"], env)
    nodes.append(_spawn("cloud-1", ["cloud_node", "--node-id", "cloud-1"], env))
    nodes += [
        _spawn(node_id, ["edge_node", "--node-id", node_id, "--set", f"http_port={args.edge_http_port + i}",
                         "--set", f"bus.port={edge_ports[node_id]}", *edge_settings], env)
        for i, node_id in enumerate(edge_ids)
    ]
    dashboard.start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    logger.info("fleet running: broker on 127.0.0.1:%d, InfluxDB at %s, center, cloud-1, %s (edges: %s)", args.port,
                influx.url, ", ".join(edge_ids), " ".join(edge_settings[1::2]))
    logger.info("dashboard: %s  (Ctrl-C stops everything)", dashboard.url)
    try:
        while not stop.wait(1.0):
            for child in [center, *nodes]:
                if child.process.poll() is not None:
                    logger.error("%s exited with code %s; stopping the fleet", child.name, child.process.returncode)
                    stop.set()
    finally:
        _stop(nodes)
        _stop([center])
        dashboard.stop()
        influx.stop()
        for broker in reversed(brokers):
            broker.stop()
        logger.info("fleet stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
