"""Membership benchmark: many simulated edges register, heartbeat, then a tenth die abruptly.

`.venv/bin/python -m benchmarks.membership --edges 500 --json` prints one JSON object as its last line:
edges, registered, keepalive_s, detect_s_max (kill to offline in the center, worst case),
false_offline (live edges ever marked offline), center_cpu_pct (the center process while the fleet
heartbeats). Two ways to die: half the victims drop their sockets (the broker sees the connection
close and sends the Will at once); the other half freeze (their worker process gets SIGSTOP: the TCP
connection stays up and only the keep-alive timeout, 1.5 x keepalive_s, reveals them), the worst case.
Edges run in worker processes (each edge a real NodePresence with its own MQTT connection); the center
runs in this process so its CPU can be measured alone.

`--swarm` (the default above 1,000 edges): each worker drives its edges from one thread (`broker/swarm.py`:
own connection, Last Will, birth, heartbeats per edge, but no node runtime), since thousands of real
nodes at three threads each do not fit a small host.

`--bridged`: the two-level topology of docs/scaling.md. Edges connect to two site brokers (half each),
bridged with Mosquitto's own bridging to a core broker where the center is; registration, heartbeats and
Last Wills all cross a bridge. Goal: registered == edges, false_offline == 0, detect_s_max <= 1.5 x
keepalive + 2 (the result's `detect_limit_s`).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import tempfile
import time
from collections.abc import Iterator

import psutil

from benchmarks.report import print_result
from broker.bridging import two_level
from broker.config import BusConfig
from broker.launcher import BrokerConfig, LocalBroker, free_port
from broker.messages import Capabilities
from broker.presence import NodePresence
from broker.swarm import Swarm
from fleet_center.config import CenterConfig
from fleet_center.membership import FleetMembership

HEARTBEAT_S = 2.0
KEEPALIVE_S = 5
CAPS = Capabilities(cores=4, memory_bytes=4 << 30, gflops=10.0)


def edge_worker(node_ids: list[str], port: int, secrets: str, commands: mp.Queue, replies: mp.Queue) -> None:
    bus = BusConfig(port=port, keepalive_s=KEEPALIVE_S, password_file=f"{secrets}/{{node}}.password", connect_timeout_s=60)
    nodes = {}
    for node_id in node_ids:
        nodes[node_id] = NodePresence(node_id, "edge", bus, heartbeat_interval_s=HEARTBEAT_S, capabilities=CAPS).start()
    replies.put("started")
    while True:
        command, victims = commands.get()
        if command == "kill":
            killed_at = {}
            for node_id in victims:
                nodes[node_id].crash()  # socket closed, no DISCONNECT: the broker sends the Will
                killed_at[node_id] = time.monotonic()
            replies.put(killed_at)
        elif command == "stop":
            for node_id, node in nodes.items():
                if node_id not in victims:
                    node.stop()
            replies.put("stopped")
            return


@contextlib.contextmanager
def brokers(tmp: str, shards: list[list[str]], bridged: bool) -> Iterator[tuple[int, list[int]]]:
    """Start the broker(s); yields the center's port and each shard's port (a site broker's when bridged)."""
    secrets = f"{tmp}/secrets"
    if not bridged:
        config = BrokerConfig(port=free_port(), state_dir=f"{tmp}/broker", secrets_dir=secrets,
                              edge_users=tuple(n for shard in shards for n in shard), cloud_users=())
        with LocalBroker(config):
            yield config.port, [config.port] * len(shards)
        return
    site_of_shard = [f"site-{'ab'[i % 2]}" for i in range(len(shards))]  # closers on a, frozen on b, live alternate
    edges_by_site = {site: tuple(n for shard, s in zip(shards, site_of_shard, strict=True) if s == site for n in shard)
                     for site in ("site-a", "site-b")}
    topology = two_level(tmp, free_port(), {site: free_port() for site in edges_by_site}, edges_by_site, (), secrets,
                         keepalive_s=KEEPALIVE_S)
    with contextlib.ExitStack() as stack:
        core = stack.enter_context(LocalBroker(BrokerConfig(**topology.core)))
        ports = {site: stack.enter_context(LocalBroker(BrokerConfig(**settings))).config.port
                 for site, settings in topology.sites.items()}
        time.sleep(2.0)  # the bridges connect (restart_timeout 1 s)
        yield core.config.port, [ports[site] for site in site_of_shard]


def swarm_worker(node_ids: list[str], port: int, secrets: str, commands: mp.Queue, replies: mp.Queue) -> None:
    """Like edge_worker, with the edges as a `Swarm` on one thread (thousands of real NodePresences do not fit)."""
    bus = BusConfig(port=port, keepalive_s=KEEPALIVE_S, password_file=f"{secrets}/{{node}}.password")
    swarm = Swarm(node_ids, bus, HEARTBEAT_S)
    swarm.connect(timeout_s=120)
    replies.put("started")
    while True:
        swarm.run_for(0.05)
        try:
            command, victims = commands.get_nowait()
        except queue.Empty:
            continue
        if command == "kill":
            swarm.drop(victims)
            replies.put(dict.fromkeys(victims, time.monotonic()))
        elif command == "stop":
            swarm.close()
            replies.put("stopped")
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.membership", description=__doc__)
    parser.add_argument("--edges", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4, help="edge worker processes")
    parser.add_argument("--bridged", action="store_true", help="edges on two site brokers bridged to a core broker")
    parser.add_argument("--swarm", action="store_true",
                        help="simulated edges on one thread per worker (broker/swarm.py); the default above 1000 edges")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    swarm = args.swarm or args.edges > 1000
    node_ids = [f"edge-{i:04d}" for i in range(args.edges)]
    ctx = mp.get_context("spawn")
    tenth = max(2, args.edges // 10)
    closers, frozen = node_ids[: tenth // 2], node_ids[tenth // 2 : tenth]
    live = node_ids[tenth:]
    shards = [closers, frozen] + [live[i :: args.workers] for i in range(args.workers)]
    with tempfile.TemporaryDirectory() as tmp, brokers(tmp, shards, args.bridged) as (center_port, shard_ports):
        secrets = f"{tmp}/secrets"
        center_config = CenterConfig(
            bus=BusConfig(port=center_port, password_file=f"{secrets}/{{node}}.password"),
            heartbeat_timeout_s=3 * HEARTBEAT_S,
        )
        center = FleetMembership(center_config).start()
        offline_at: dict[str, float] = {}
        center.listeners.append(
            lambda change, _: offline_at.setdefault(change.node_id, time.monotonic()) if change.kind == "offline" else None
        )
        queues = [(ctx.Queue(), ctx.Queue()) for _ in shards]
        workers = [ctx.Process(target=swarm_worker if swarm else edge_worker, args=(shard, port, secrets, q[0], q[1]))
                   for shard, port, q in zip(shards, shard_ports, queues, strict=True)]
        for worker in workers:
            worker.start()
        for _, replies in queues:
            replies.get(timeout=300)
        deadline = time.monotonic() + 60 + args.edges / 50  # connecting thousands takes a while on 2 cores
        while len(center.snapshot().online()) < args.edges and time.monotonic() < deadline:
            time.sleep(0.2)
        registered = len(center.snapshot().online())
        # Steady state: measure the center's CPU over a few heartbeat periods.
        me = psutil.Process()
        cpu_start, wall_start = me.cpu_times(), time.monotonic()
        time.sleep(5 * HEARTBEAT_S)
        cpu_end, wall_end = me.cpu_times(), time.monotonic()
        center_cpu_pct = 100 * ((cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)) / (wall_end - wall_start)
        victims_per_shard = [closers, frozen] + [[] for _ in shards[2:]]
        killed_at: dict[str, float] = {}
        queues[0][0].put(("kill", closers))
        frozen_at = time.monotonic()
        os.kill(workers[1].pid, signal.SIGSTOP)  # a hung host: sockets open, nothing sent
        killed_at.update({node_id: frozen_at for node_id in frozen})
        killed_at.update(queues[0][1].get(timeout=60))
        limit_s = 1.5 * KEEPALIVE_S + (2 if args.bridged else 1)  # a bridge adds a hop
        deadline = time.monotonic() + limit_s + 5
        while time.monotonic() < deadline and not all(v in offline_at for v in killed_at):
            time.sleep(0.05)
        time.sleep(3 * HEARTBEAT_S)  # would any live edge be wrongly timed out meanwhile?
        detect = [offline_at[v] - killed_at[v] for v in killed_at if v in offline_at]
        detect_closed = [offline_at[v] - killed_at[v] for v in closers if v in offline_at]
        os.kill(workers[1].pid, signal.SIGKILL)
        undetected = [v for v in killed_at if v not in offline_at]
        false_offline = sorted(set(offline_at) - set(killed_at))
        for (commands, replies), victims in list(zip(queues, victims_per_shard, strict=True))[2:]:
            commands.put(("stop", victims))
            replies.get(timeout=120)
        queues[0][0].put(("stop", closers))
        for worker in workers:
            worker.join(30)
        center.stop()
    result = {
        "edges": args.edges,
        "bridged": args.bridged,
        "swarm": swarm,
        "registered": registered,
        "keepalive_s": KEEPALIVE_S,
        "heartbeat_s": HEARTBEAT_S,
        "killed": len(killed_at),
        "undetected": len(undetected),
        "detect_s_max": round(max(detect), 3) if detect else None,
        "detect_s_max_socket_closed": round(max(detect_closed), 3) if detect_closed else None,
        "detect_limit_s": limit_s,
        "false_offline": len(false_offline),
        "center_cpu_pct": round(center_cpu_pct, 1),
    }
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
