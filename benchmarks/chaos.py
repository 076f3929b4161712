"""Chaos benchmark: kill -9 and restart every process type at random points while the fleet runs rounds.

`.venv/bin/python -m benchmarks.chaos --json` starts the fleet as `make run` does, as separate processes
(Mosquitto, InfluxDB, `python -m fleet_center`, `python -m cloud_node`, three `python -m edge_node`), under
its own EDGEFLEET_HOME, on tiny real models so that rounds are short on a shared 2-core host: offloading
rounds in collaborative mode (every edge task opens a cloud session), a caching round every fifth
round (deployments over the artifact server). It then kills each process type `--kills` times (SIGKILL,
at random points: an edge, the cloud worker, the center, Mosquitto, InfluxDB, in a shuffled order) and
restarts it after a short pause, lets the fleet finish its rounds, stops it cleanly and checks:

- tasks: task instances of finished rounds; tasks_lost: those without an outcome (done, or failed with a
  reason) in the center's database; tasks_duplicated: outcomes a round summary counts beyond its
  instances (a resumed round must not count a task twice);
- results_double_counted: task ids with more than one `ok` task point in InfluxDB;
- metric_points_lost: `ok` outcomes in the database without their task point in InfluxDB (points
  recorded while InfluxDB was down wait in the center's spool on disk, across center kills too);
- kills per type and recovery_s_max per type: kill to back in service (edge/cloud: a heartbeat of the
  new process; center: its retained online state again; Mosquitto: every node heartbeating again;
  InfluxDB: answering /ping).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
from tqdm import tqdm

from benchmarks.report import print_result
from broker import topics
from broker.client import BusClient, Envelope
from broker.config import BusConfig
from broker.launcher import BrokerConfig, LocalBroker, free_port
from broker.messages import CenterState
from metrics import schema
from metrics.config import StoreConfig
from metrics.influx1 import Influx1Store
from metrics.launcher import LocalInfluxDB, ServerConfig
from models.tiny import write_tiny_model
from runtime.settings import REPO_ROOT

logger = logging.getLogger(__name__)

EDGES = ("pi-01", "pi-02", "pi-03")
CLOUD = "cloud-1"
TYPES = ("edge", "cloud", "center", "mosquitto", "influxdb")


@dataclasses.dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None


class Fleet:
    """The fleet's processes under one EDGEFLEET_HOME; each can be killed and started again."""

    def __init__(self, home: Path, rng: random.Random) -> None:
        self.home = home
        self.rng = rng
        self.logs = home / "logs"
        self.logs.mkdir(parents=True)
        store = home / "store"
        write_tiny_model(store, "tiny-a", seed=0, layers=2, hidden=64)
        write_tiny_model(store, "tiny-b", seed=1, layers=2, hidden=32)
        self.broker = LocalBroker(BrokerConfig(port=free_port(), state_dir=str(home / "broker"),
                                               secrets_dir=str(home / "secrets"), edge_users=EDGES, cloud_users=(CLOUD,)))
        self.influx = LocalInfluxDB(ServerConfig(port=free_port(), data_dir=str(home / "influxdb")))
        self.env = {**os.environ, "EDGEFLEET_HOME": str(home), "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE",
                    "EDGEFLEET_BUS_PORT": str(self.broker.config.port), "EDGEFLEET_BUS_KEEPALIVE_S": "3"}
        center = ["fleet_center", "--set", f"metrics.store.url={self.influx.url}", "--set", "rounds.total_rounds=0",
                  "--set", "rounds.models=tiny-a,tiny-b", "--set", "rounds.initial_model=tiny-a",
                  "--set", f"rounds.model_store={store}", "--set", "rounds.offloading_rounds=4",
                  "--set", "rounds.edge_mode=collaborative", "--set", "rounds.max_new_tokens=24",
                  "--set", "rounds.task_deadline_s=20", "--set", "rounds.deploy_timeout_s=40",
                  "--set", "rounds.round_interval_s=0.5", "--set", "rounds.min_edges=1", "--set", "rounds.tasks_per_edge=2",
                  "--set", "heartbeat_timeout_s=6", "--set", f"artifacts_port={free_port()}",
                  "--set", "metrics.flush_interval_s=0.5"]
        self.children = {"center": Child("center", center),
                         CLOUD: Child(CLOUD, ["cloud_node", "--node-id", CLOUD, "--set", f"model_store={store}",
                                             "--set", "torch_threads=1", "--set", "heartbeat_interval_s=1"])}
        for node in EDGES:  # own stores holding tiny-a only: a caching round must deploy tiny-b over HTTP
            write_tiny_model(home / f"store-{node}", "tiny-a", seed=0, layers=2, hidden=64)
            self.children[node] = Child(node, ["edge_node", "--node-id", node, "--set", f"model_store={home / f'store-{node}'}",
                                               "--set", "http_port=0", "--set", "torch_threads=1",
                                               "--set", "heartbeat_interval_s=1", "--set", "cloud_deadline_s=3"])

    def start_all(self) -> None:
        self.broker.start(stdout=subprocess.DEVNULL)
        self.influx.start()
        for name in self.children:
            self.start(name)

    def start(self, name: str) -> None:
        child = self.children[name]
        with (self.logs / f"{name}.log").open("ab") as log:
            child.process = subprocess.Popen([sys.executable, "-m", *child.args], cwd=REPO_ROOT, env=self.env,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, name: str) -> None:
        process = self.children[name].process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def stop_all(self) -> None:
        for name in [n for n in self.children if n != "center"] + ["center"]:
            process = self.children[name].process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.influx.stop()
        self.broker.stop()


class Monitor:
    """Watches the bus as the center user: last heartbeat per node, when the center last came online."""

    def __init__(self, fleet: Fleet) -> None:
        password = (fleet.home / "secrets" / "center.password").read_text().strip()
        config = BusConfig(port=fleet.broker.config.port, username="center", password=password, keepalive_s=3,
                           reconnect_max_s=1.0)
        self.bus = BusClient("chaos-monitor", config)
        self.heartbeat_at: dict[str, float] = {}
        self.center_online_at = 0.0
        self.bus.subscribe(topics.NODE_HEARTBEAT, self._on_heartbeat)
        self.bus.subscribe(topics.CENTER_STATE, self._on_center)
        self.bus.connect(30)

    def _on_heartbeat(self, envelope: Envelope) -> None:
        self.heartbeat_at[envelope.params["node"]] = time.monotonic()

    def _on_center(self, envelope: Envelope) -> None:
        if isinstance(envelope.message, CenterState) and envelope.message.online:
            self.center_online_at = time.monotonic()


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def chaos(fleet: Fleet, monitor: Monitor, kills_per_type: int, rng: random.Random) -> dict[str, list[float]]:
    """Kill and restart processes in a shuffled order; returns recovery seconds per type."""
    plan = [kind for kind in TYPES for _ in range(kills_per_type)]
    rng.shuffle(plan)
    recovery: dict[str, list[float]] = defaultdict(list)
    restarted: list[threading.Thread] = []
    for number, kind in enumerate(tqdm(plan, desc="kills", unit="kill", file=sys.stderr), 1):
        time.sleep(rng.uniform(4.0, 14.0))  # a random point of whatever round is running
        killed_at = time.monotonic()
        name = {"edge": rng.choice(EDGES), "cloud": CLOUD, "center": "center"}.get(kind, kind)
        if kind == "mosquitto":
            fleet.broker.kill()
        elif kind == "influxdb":
            fleet.influx.kill()
        else:
            fleet.kill(name)
        time.sleep(rng.uniform(0.5, 3.0))  # down for a moment
        if kind == "mosquitto":
            fleet.broker.start(stdout=subprocess.DEVNULL)
        elif kind == "influxdb":
            # A long outage, during which the next kill happens (the center's, maybe): its points wait on disk.
            outage_s = rng.uniform(10.0, 25.0)
            restarted.append(threading.Thread(target=restart_influx, args=(fleet, outage_s, killed_at, recovery[kind])))
            restarted[-1].start()
            logger.warning("chaos %d/%d: influxdb killed, down for %.0f s", number, len(plan), outage_s)
            continue
        else:
            fleet.start(name)
        back = wait_for(back_in_service(fleet, monitor, kind, name, killed_at), 120)
        seconds = time.monotonic() - killed_at
        recovery[kind].append(round(seconds, 2) if back else float("inf"))
        logger.warning("chaos %d/%d: %s killed and back in %.1f s%s", number, len(plan), kind, seconds,
                       "" if back else " (NOT back)")
    for thread in restarted:
        thread.join()
    return recovery


def restart_influx(fleet: Fleet, outage_s: float, killed_at: float, recovery: list[float]) -> None:
    """Start InfluxDB again after `outage_s`; record kill to answering /ping."""
    time.sleep(outage_s)
    fleet.influx.start()
    back = wait_for(lambda: _pings(fleet.influx.url), 60)
    recovery.append(round(time.monotonic() - killed_at, 2) if back else float("inf"))


def back_in_service(fleet: Fleet, monitor: Monitor, kind: str, name: str, killed_at: float) -> Callable[[], bool]:
    """The check that a restarted process of `kind` serves again."""
    if kind == "mosquitto":  # every node heartbeating through the new broker
        return lambda: all(monitor.heartbeat_at.get(node, 0) > killed_at for node in (*EDGES, CLOUD))
    if kind == "influxdb":
        return lambda: _pings(fleet.influx.url)
    if kind == "center":
        return lambda: monitor.center_online_at > killed_at
    return lambda: monitor.heartbeat_at.get(name, 0) > killed_at


def _pings(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ping", timeout=2).status_code < 300
    except httpx.HTTPError:
        return False


def account(home: Path, influx_url: str) -> dict[str, int]:
    """Tasks, losses and double counts from the center's database and InfluxDB."""
    db = sqlite3.connect(home / "center" / "center.sqlite")
    finished = [r for (r,) in db.execute("SELECT round_index FROM rounds WHERE finished_at IS NOT NULL")]
    tasks = db.execute(f"SELECT COUNT(*) FROM tasks WHERE round_index IN ({','.join(map(str, finished)) or '-1'})").fetchone()[0]
    lost = db.execute(
        f"SELECT COUNT(*) FROM tasks t LEFT JOIN results r USING (instance_id) WHERE r.instance_id IS NULL "
        f"AND t.round_index IN ({','.join(map(str, finished)) or '-1'})").fetchone()[0]
    duplicated = 0
    for round_index, summary in db.execute("SELECT round_index, summary FROM rounds WHERE finished_at IS NOT NULL"):
        instances = db.execute("SELECT COUNT(*) FROM tasks WHERE round_index = ?", (round_index,)).fetchone()[0]
        counted = _summary_tasks(summary)
        duplicated += max(0, counted - instances)
    ok_ids = {row[0] for row in db.execute("SELECT instance_id FROM results WHERE status = 'ok'")}
    failed = db.execute("SELECT COUNT(*) FROM results WHERE status != 'ok'").fetchone()[0]
    db.close()
    points = Influx1Store(StoreConfig(url=influx_url)).query(schema.TASK, 0, time.time_ns() + 10**12, limit=1_000_000)
    ok_points = points[points["status"] == "ok"] if not points.empty else points
    per_task = ok_points.groupby("task_id").size() if not ok_points.empty else {}
    double = int((per_task > 1).sum()) if len(per_task) else 0
    seen = set(per_task.index) if len(per_task) else set()
    return {"tasks": int(tasks), "tasks_ok": len(ok_ids), "tasks_failed": int(failed), "tasks_lost": int(lost),
            "tasks_duplicated": int(duplicated), "results_double_counted": double,
            "metric_points_lost": len(ok_ids - seen), "rounds": len(finished)}


def _summary_tasks(summary: str | None) -> int:
    try:
        return int(json.loads(summary or "{}").get("tasks", 0))
    except (ValueError, TypeError):
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    parser.add_argument("--kills", type=int, default=3, help="kills of each process type")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the fleet's directory (logs) and print its path")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s chaos %(message)s")
    rng = random.Random(args.seed)
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="edgefleet-chaos-"))
    fleet = Fleet(home, rng)
    fleet.start_all()
    try:
        monitor = Monitor(fleet)
        db_path = home / "center" / "center.sqlite"
        wait_for(lambda: db_path.exists() and _finished_rounds(db_path) >= 2, 240)
        recovery = chaos(fleet, monitor, args.kills, rng)
        settle_from = _finished_rounds(db_path)
        wait_for(lambda: _finished_rounds(db_path) >= settle_from + 3, 300)  # every interrupted round resumed
        time.sleep(3.0)
        monitor.bus.close()
    finally:
        fleet.stop_all()
    fleet.influx.start()  # read back what reached InfluxDB (the center flushed its spool on stop)
    try:
        figures = account(home, fleet.influx.url)
    finally:
        fleet.influx.stop()
    result = {
        "kills": {kind: len(recovery.get(kind, [])) for kind in TYPES},
        **figures,
        "recovery_s_max": {kind: max(recovery[kind]) for kind in TYPES if recovery.get(kind)},
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.keep:
        result["home"] = str(home)
    else:
        shutil.rmtree(home, ignore_errors=True)
    print_result(result, args.json)
    return 0


def _finished_rounds(db_path: Path) -> int:
    try:
        with sqlite3.connect(db_path, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM rounds WHERE finished_at IS NOT NULL").fetchone()[0])
    except sqlite3.Error:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
