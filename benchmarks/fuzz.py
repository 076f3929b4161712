"""Fuzz benchmark: malformed input on every topic a node subscribes to and every HTTP endpoint; nobody dies.

`.venv/bin/python -m benchmarks.fuzz --json` starts a real fleet in this process (Mosquitto, the center
running rounds, two edges, a cloud worker; tiny real models) and throws `--inputs` malformed inputs at it:
- MQTT, over every topic a node subscribes to, with `broker/fuzzing.py`'s payloads (random bytes,
  truncated and wrong-schema msgpack, oversized, NaN/inf, deeply nested, another topic's message) on
  top of real captured traffic, plus exact replays of captured messages and forged births, deaths and
  results (another edge's id, refused by the broker's ACL, or its id inside the attacker's own topic).
  Topics only the center (or a cloud worker) may write get only payloads that do not decode as their
  type, and replays: a well-formed `stop` command from the center is an order, not an attack.
- HTTP, on every route of the edges' API and the center's artifact server: random bytes, JSON of the
  wrong shape, NaN, huge numbers and strings, deep nesting, unknown routes and methods, bad Range
  headers, raw non-HTTP bytes on the socket.
Afterwards every node must still heartbeat and serve: each edge answers /health and runs a task over
HTTP, the cloud opens a session, the center finishes rounds and serves an index. Last line, JSON:
inputs, mqtt_inputs, http_inputs, acl_blocked, replays, nodes_dead, http_5xx, rejected (per node, from
heartbeat counters), rounds_during, seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import torch
from tqdm import tqdm

from benchmarks.report import print_result
from broker import fuzzing, topics
from broker.client import BusClient, Envelope
from broker.config import BusConfig
from broker.errors import MessageError
from broker.launcher import BrokerConfig, LocalBroker, free_port
from broker.messages.codec import decode
from cloud_node.config import CloudConfig
from cloud_node.service import CloudService
from edge_node.config import EdgeConfig
from edge_node.service import EdgeService
from fleet_center.config import CenterConfig, RoundsConfig
from fleet_center.service import CenterService
from models.tiny import write_tiny_model

logger = logging.getLogger(__name__)

EDGES = ("pi-01", "pi-02")
ATTACKER = "pi-66"  # a registered edge that misbehaves: its own topics carry anything
CLOUD = "cloud-1"
MODEL = "tiny-a"
HEARTBEAT_S = 0.5
GENERATOR_WEIGHTS = {"random_bytes": 3, "truncated": 3, "wrong_field_type": 4, "missing_field": 2, "unknown_field": 2,
                     "other_tag_or_version": 2, "not_finite": 3, "oversized": 0.3, "deeply_nested": 1}


@dataclasses.dataclass
class Fleet:
    broker: LocalBroker
    edges: dict[str, EdgeService]
    cloud: CloudService
    center: CenterService
    secrets: Path

    def bus(self, user: str, **changes: object) -> BusConfig:
        password = (self.secrets / f"{user}.password").read_text().strip()
        return dataclasses.replace(BusConfig(port=self.broker.config.port, keepalive_s=5, connect_timeout_s=15),
                                   username=user, password=password, **changes)


def start_fleet(root: Path) -> Fleet:
    store = root / "store"
    write_tiny_model(store, MODEL, seed=0, layers=2, hidden=64)
    broker = LocalBroker(BrokerConfig(port=free_port(), state_dir=str(root / "broker"), secrets_dir=str(root / "secrets"),
                                      edge_users=(*EDGES, ATTACKER), cloud_users=(CLOUD,))).start()
    base = BusConfig(port=broker.config.port, password_file=str(root / "secrets" / "{node}.password"), keepalive_s=2)
    edges = {node: EdgeService(EdgeConfig(
        node_id=node, bus=base, model_store=str(store), state_dir=str(root / "state"), http_port=0,
        heartbeat_interval_s=HEARTBEAT_S, cache_wait_s=5)).start() for node in EDGES}
    cloud = CloudService(CloudConfig(node_id=CLOUD, bus=base, model_store=str(store), state_dir=str(root / "state"),
                                     heartbeat_interval_s=HEARTBEAT_S)).start()
    rounds = RoundsConfig(total_rounds=0, round_interval_s=0.2, tasks_per_edge=1, arrival="fixed", models=(MODEL,),
                          initial_model=MODEL, model_store=str(store), max_new_tokens=4, task_deadline_s=20,
                          min_edges=2, wait_for_edges_s=30)
    center = CenterService(CenterConfig(bus=base, heartbeat_timeout_s=3, tick_interval_s=0.2,
                                        state_dir=str(root / "center"), record_metrics=False, artifacts_port=0,
                                        rounds=rounds)).start()
    return Fleet(broker, edges, cloud, center, root / "secrets")


class Capture:
    """Real traffic (as the center user sees it) for seeds and replays, and the last heartbeat of every node."""

    def __init__(self, bus: BusClient) -> None:
        self.bus = bus
        self.payloads: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        self.heartbeats: dict[str, tuple[float, dict[str, float]]] = {}
        for spec in topics.ALL_TOPICS:
            if spec.message is not None:
                bus.subscribe(spec, self._on_message, wait_s=10)

    def _on_message(self, envelope: Envelope) -> None:
        assert envelope.spec is not None
        seen = self.payloads[envelope.spec.pattern]
        if len(seen) < 50:
            seen.append((envelope.topic, envelope.message.to_bytes()))
        if envelope.spec is topics.NODE_HEARTBEAT:
            self.heartbeats[envelope.params["node"]] = (time.time(), dict(envelope.message.counters))

    def seed(self, spec: topics.TopicSpec, rng: random.Random) -> bytes:
        seen = self.payloads.get(spec.pattern)
        if seen:
            return rng.choice(seen)[1]
        others = [payload for items in self.payloads.values() for _, payload in items]
        return rng.choice(others) if others else b""


@dataclasses.dataclass(frozen=True)
class Target:
    topic: str
    spec: topics.TopicSpec
    writer: str  # broker user that publishes
    trusted: bool  # only the center/cloud may write here: send nothing that decodes as the topic's type


def targets(fleet: Fleet, session: str) -> list[Target]:
    """Every topic a node subscribes to, with the user allowed to write it."""
    found = [Target(topics.CENTER_STATE.topic(), topics.CENTER_STATE, "center", True)]
    for node in (*EDGES, CLOUD):
        found += [Target(topics.NODE_COMMAND.topic(node=node), topics.NODE_COMMAND, "center", True),
                  Target(topics.TASK_DISPATCH.topic(node=node), topics.TASK_DISPATCH, "center", True),
                  Target(topics.REPLY.topic(client=node), topics.REPLY, CLOUD, True)]
    found.append(Target(topics.REPLY.topic(client="center"), topics.REPLY, ATTACKER, False))
    for node in EDGES:
        found.append(Target(topics.INFER_DOWN.topic(edge=node, session=session), topics.INFER_DOWN, CLOUD, True))
    # What the center and the cloud read from edges: the attacker's own topics carry anything.
    for spec in (topics.NODE_BIRTH, topics.NODE_DEATH, topics.NODE_HEARTBEAT, topics.TASK_RESULT, topics.MODEL_STATUS,
                 topics.METRICS):
        found.append(Target(spec.topic(node=ATTACKER), spec, ATTACKER, False))
    found += [Target(topics.INFER_OPEN.topic(), topics.INFER_OPEN, ATTACKER, False),
              Target(topics.INFER_UP.topic(edge=ATTACKER, session=session), topics.INFER_UP, ATTACKER, False)]
    return found


def malformed(target: Target, capture: Capture, rng: random.Random) -> bytes:
    names = list(GENERATOR_WEIGHTS)
    for _ in range(8):
        name = rng.choices(names, weights=[GENERATOR_WEIGHTS[n] for n in names])[0]
        payload = fuzzing.GENERATORS[name](rng, capture.seed(target.spec, rng))
        if not target.trusted or not _decodes_as(payload, target.spec):
            return payload
    return rng.randbytes(16)


def _decodes_as(payload: bytes, spec: topics.TopicSpec) -> bool:
    try:
        message = decode(payload)
    except MessageError:
        return False
    return spec.message is None or isinstance(message, spec.message)


def fuzz_mqtt(fleet: Fleet, capture: Capture, count: int, rng: random.Random) -> dict[str, int]:
    """Publish `count` inputs; returns counts by kind."""
    clients = {user: BusClient(f"fuzz-{user}", fleet.bus(user)).connect() for user in ("center", CLOUD, ATTACKER, *EDGES)}
    session = "fuzz-session"
    all_targets = targets(fleet, session)
    kinds: dict[str, int] = defaultdict(int)
    try:
        for number in tqdm(range(count), desc="MQTT inputs", unit="input", file=sys.stderr):
            roll = rng.random()
            if roll < 0.08:  # exact replay of real traffic, by the user that may write it
                spec_pattern, (topic, payload) = _captured(capture, rng)
                writer = _writer_of(topic)
                if writer is None:
                    continue
                clients[writer].publish_bytes(topic, payload, qos=rng.choice((0, 1)))
                kinds["replays"] += 1
            elif roll < 0.14:  # forged: another node's birth, death or result in the attacker's name
                victim = rng.choice((*EDGES, CLOUD))
                spec = rng.choice((topics.NODE_BIRTH, topics.NODE_DEATH, topics.TASK_RESULT, topics.MODEL_STATUS))
                payload = capture.seed(spec, rng)
                if rng.random() < 0.5:  # on the victim's topic: the broker's ACL drops it
                    clients[ATTACKER].publish_bytes(spec.topic(node=victim), payload, qos=1)
                    kinds["acl_blocked"] += 1
                else:  # the victim's message on the attacker's own topic: the center must not believe it
                    clients[ATTACKER].publish_bytes(spec.topic(node=ATTACKER), payload, qos=1)
                    kinds["forged_in_own_topic"] += 1
            else:
                target = rng.choice(all_targets)
                clients[target.writer].publish_bytes(target.topic, malformed(target, capture, rng), qos=rng.choice((0, 1)))
                kinds["malformed"] += 1
            if number % 200 == 199:
                time.sleep(0.05)  # let the nodes breathe: this is a robustness test, not a load test
        for client in clients.values():
            client.flush(30)
    finally:
        for client in clients.values():
            client.close()
    return dict(kinds)


def _captured(capture: Capture, rng: random.Random) -> tuple[str, tuple[str, bytes]]:
    pattern = rng.choice(sorted(capture.payloads))
    return pattern, rng.choice(capture.payloads[pattern])


def _writer_of(topic: str) -> str | None:
    """The broker user that may publish on `topic` (the node named in it, or the center)."""
    spec, params = topics.parse(topic)
    if spec in (topics.TASK_DISPATCH, topics.NODE_COMMAND, topics.CENTER_STATE):
        return "center"
    node = params.get("node") or params.get("edge")
    if spec is topics.INFER_DOWN:
        return CLOUD
    if node in (*EDGES, CLOUD, ATTACKER):
        return node
    return None


# ---- HTTP ----------------------------------------------------------------------------------------

_JSON_ODD = ("NaN", "Infinity", "-Infinity", "1e999", "-1", "0", "null", "true", '"x"', "[]", "{}",
             '"' + "a" * 70_000 + '"', "18446744073709551616", '"\\ud800"')


def http_inputs(rng: random.Random, base: str, kind: str) -> tuple[str, str, dict[str, str], bytes]:
    """(method, url, headers, body) of one malformed request to an edge (`kind` edge) or the artifact server."""
    if kind == "artifacts":
        path = rng.choice(("/models/tiny-a/index.json", "/models/tiny-a/files/manifest.json", "/models/%2e%2e/index.json",
                           "/models/tiny-a/files/..%2fsecrets", "/models/" + "x" * 3000 + "/index.json", "/",
                           "/models/tiny-a/files/model.safetensors", f"/models/{rng.randbytes(8).hex()}/files/x"))
        headers = {"Range": rng.choice(("bytes=0-", "bytes=-0", "bytes=99999999-", "bytes=5-2", "bytes=a-b",
                                        "bytes=0-1,2-3", "pages=1", "bytes=" + "9" * 40 + "-"))}
        if rng.random() < 0.3:
            headers["If-Range"] = rng.choice(('"nope"', "W/x", ""))
        return rng.choice(("GET", "HEAD", "POST", "DELETE")), base + path, headers, b""
    roll = rng.random()
    if roll < 0.55:
        body = _task_body(rng)
        return "POST", base + "/perform_task", {"content-type": "application/json"}, body
    if roll < 0.75:
        task_id = rng.choice(("nope", "%2e%2e", "x" * 5000, rng.randbytes(6).hex(), "../../etc/passwd", "%00"))
        return "GET", base + "/tasks/" + task_id, {}, b""
    path = rng.choice(("/health", "/api/ps", "/perform_task", "/nope", "/tasks/", "//", "/docs", "/openapi.json"))
    return rng.choice(("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")), base + path, {}, rng.randbytes(rng.randrange(64))


def _task_body(rng: random.Random) -> bytes:
    fields = {"task_type": '"QA"', "model_name": f'"{MODEL}"', "prompt": '"hi"', "max_new_tokens": "2", "wait": "false"}
    roll = rng.random()
    if roll < 0.2:
        return rng.randbytes(rng.choice((0, 5, 300)))
    if roll < 0.3:
        return b"[" * rng.choice((100, 10_000, 200_000)) + b"]"
    if roll < 0.35:
        return b'{"prompt": "' + b"p" * 300_000 + b'"}'  # over the body limit
    if roll < 0.38:
        return json.dumps({"task_type": "QA", "model_name": MODEL, "prompt": "hi", "max_new_tokens": 2}).encode()
    key = rng.choice([*fields, "priority", "timeout_s", "keep_alive_s", "wait_timeout_s", "task_id", "mode", "zzz"])
    if rng.random() < 0.2:
        fields.pop(key, None)
    else:
        fields[key] = rng.choice(_JSON_ODD)
    return ("{" + ",".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


def raw_garbage(host: str, port: int, rng: random.Random) -> int:
    """Bytes that are not HTTP straight onto the socket; returns the status code answered (0 = connection closed)."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(rng.choice((rng.randbytes(200), b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\n",
                                 b"POST /perform_task HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                                 b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 5000 + b"\r\n")))
        try:
            answer = sock.recv(64)
        except (TimeoutError, ConnectionError):
            return 0
    parts = answer.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else 0


def fuzz_http(fleet: Fleet, count: int, rng: random.Random) -> tuple[int, dict[int, int]]:
    """Send `count` requests; returns (5xx answers, count by status)."""
    statuses: dict[int, int] = defaultdict(int)
    servers = [(edge.http.url, "edge", edge.http.host, edge.http.port) for edge in fleet.edges.values()]
    artifacts = fleet.center.artifacts
    assert artifacts is not None
    servers.append((artifacts.base_url, "artifacts", "127.0.0.1", artifacts.port))
    with httpx.Client(timeout=30) as client:
        for _ in tqdm(range(count), desc="HTTP inputs", unit="input", file=sys.stderr):
            base, kind, host, port = rng.choice(servers)
            if rng.random() < 0.03:
                status = raw_garbage(host, port, rng)
            else:
                method, url, headers, body = http_inputs(rng, base, kind)
                try:
                    status = client.request(method, url, headers=headers, content=body).status_code
                except httpx.HTTPError as error:
                    logger.warning("HTTP %s %s: %r", method, url[:80], error)
                    status = 0
            statuses[status] += 1
    return sum(n for status, n in statuses.items() if status >= 500), dict(statuses)


# ---- afterwards ----------------------------------------------------------------------------------

def dead_nodes(fleet: Fleet, capture: Capture, fuzz_end: float, rounds_before: int) -> list[str]:
    """Nodes that stopped heartbeating or serving after the fuzz."""
    time.sleep(4 * HEARTBEAT_S)
    dead = [node for node in (*EDGES, CLOUD) if capture.heartbeats.get(node, (0.0, {}))[0] <= fuzz_end]
    for node, edge in fleet.edges.items():
        try:
            health = httpx.get(f"{edge.http.url}/health", timeout=10).status_code
            answer = httpx.post(f"{edge.http.url}/perform_task", timeout=60, json={
                "task_type": "QA", "model_name": MODEL, "prompt": "still there?", "max_new_tokens": 2, "wait": True})
            ok = health == 200 and answer.status_code == 200 and answer.json()["status"] == "ok"
        except httpx.HTTPError:
            ok = False
        if not ok and node not in dead:
            dead.append(node)
    try:
        collab = fleet.edges[EDGES[0]].executor.collab_client
        assert collab is not None
        collab.open_session(MODEL, 1, 64, timeout_s=10)
    except Exception as error:  # any failure to open means the cloud does not serve
        logger.warning("cloud does not open sessions after the fuzz: %r", error)
        if CLOUD not in dead:
            dead.append(CLOUD)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(fleet.center.db.finished_rounds()) < rounds_before + 2:
        time.sleep(0.5)
    artifacts = fleet.center.artifacts
    index_ok = artifacts is not None and httpx.get(f"{artifacts.base_url}/models/{MODEL}/index.json").status_code == 200
    if len(fleet.center.db.finished_rounds()) < rounds_before + 2 or not index_ok:
        dead.append("center")
    return dead


REJECTION_COUNTERS = ("malformed", "http_rejected", "impersonations_refused", "chunks_rejected", "late_replies")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__)
    parser.add_argument("--inputs", type=int, default=10_000, help="malformed inputs in all (MQTT and HTTP)")
    parser.add_argument("--http-share", type=float, default=0.25, help="share of the inputs sent over HTTP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        fleet = start_fleet(Path(tmp))
        monitor = BusClient("fuzz-monitor", fleet.bus("center")).connect()
        try:
            capture = Capture(monitor)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and (len(fleet.center.db.finished_rounds()) < 2
                                                   or topics.TASK_RESULT.pattern not in capture.payloads):
                time.sleep(0.5)
            rounds_before = len(fleet.center.db.finished_rounds())
            http_count = int(args.inputs * args.http_share)
            mqtt_kinds: dict[str, int] = {}
            http_result: list[tuple[int, dict[int, int]]] = []
            http_thread = threading.Thread(target=lambda: http_result.append(
                fuzz_http(fleet, http_count, random.Random(args.seed + 1))), name="fuzz-http")
            http_thread.start()
            mqtt_kinds = fuzz_mqtt(fleet, capture, args.inputs - http_count, rng)
            http_thread.join()
            fuzz_end = time.time()
            rounds_during = len(fleet.center.db.finished_rounds()) - rounds_before
            dead = dead_nodes(fleet, capture, fuzz_end, len(fleet.center.db.finished_rounds()))
            rejected = {node: {name: int(counters.get(name, 0)) for name in REJECTION_COUNTERS if counters.get(name)}
                        for node, (_, counters) in sorted(capture.heartbeats.items())}
            rejected["center"] = {"malformed": int(fleet.center.membership.bus.stats.counts["malformed"])}
        finally:
            monitor.close()
            fleet.center.stop()
            fleet.cloud.stop()
            for edge in fleet.edges.values():
                edge.stop()
            fleet.broker.stop()
    http_5xx, http_statuses = http_result[0] if http_result else (-1, {})
    mqtt_inputs = sum(mqtt_kinds.values())
    result = {
        "inputs": mqtt_inputs + sum(http_statuses.values()),
        "mqtt_inputs": mqtt_inputs,
        "http_inputs": sum(http_statuses.values()),
        "mqtt_kinds": mqtt_kinds,
        "http_statuses": {str(k): v for k, v in sorted(http_statuses.items())},
        "nodes_dead": len(dead),
        "dead": dead,
        "http_5xx": http_5xx,
        "rejected": rejected,
        "rounds_during": rounds_during,
        "seconds": round(time.monotonic() - started, 1),
    }
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
