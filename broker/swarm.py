"""Thousands of simulated edges on one thread: what membership benchmarks use when real nodes will not fit.

A real node (`broker/presence.py`) costs three threads: paho's network loop, the dispatcher and the
heartbeat. Five thousand of them are fifteen thousand threads, more than a small host can schedule.
A `Swarm` keeps each simulated edge's own MQTT connection, Last Will (a death with its bdSeq), retained
birth, QoS 0 heartbeats and `rebirth` command, but drives every connection from one selector loop.
It is a stand-in for the node runtime only, named as such: the broker, the bridges and the center see
exactly the traffic of real edges.
"""

from __future__ import annotations

import heapq
import logging
import random
import selectors
import time
from dataclasses import dataclass

import paho.mqtt.client as paho

from broker import topics
from broker.config import BusConfig
from broker.errors import BusError, MessageError
from broker.messages.codec import decode
from broker.messages.membership import Capabilities, Heartbeat, NodeBirth, NodeCommand, NodeDeath

logger = logging.getLogger(__name__)

CAPABILITIES = Capabilities(cores=4, memory_bytes=4 << 30, gflops=10.0)


@dataclass
class _Edge:
    node_id: str
    client: paho.Client
    bd_seq: int
    seq: int = 0
    connected: bool = False


class Swarm:
    """Simulated edges sharing one thread. `connect()` them, then call `run_for(seconds)` repeatedly."""

    def __init__(self, node_ids: list[str], bus: BusConfig, heartbeat_interval_s: float) -> None:
        self.bus = bus
        self.heartbeat_interval_s = heartbeat_interval_s
        self.selector = selectors.DefaultSelector()
        self._due: list[tuple[float, str]] = []  # (monotonic time of the next heartbeat, node id), a heap
        self._next_sweep_at = 0.0
        self._random = random.Random(0)
        bd_seq = int(time.time() * 1000)
        self.edges = {node_id: self._make(node_id, bd_seq) for node_id in node_ids}

    def _make(self, node_id: str, bd_seq: int) -> _Edge:
        config = self.bus.for_node(node_id)
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=node_id, protocol=paho.MQTTv5)
        if config.username:
            client.username_pw_set(config.username, config.password)
        death = NodeDeath(node_id=node_id, bd_seq=bd_seq)
        client.will_set(topics.NODE_DEATH.topic(node=node_id), death.to_bytes(), qos=1, retain=topics.NODE_DEATH.retain)
        edge = _Edge(node_id, client, bd_seq)
        client.on_connect = lambda c, u, f, reason, p: self._on_connect(edge, reason)
        client.on_message = lambda c, u, message: self._on_command(edge, message.payload)
        return edge

    def connect(self, timeout_s: float) -> int:
        """Open every connection (CONNACKs arrive while running). Returns how many sockets opened. Raises BusError."""
        opened = 0
        for edge in self.edges.values():
            try:
                edge.client.connect(self.bus.host, self.bus.port, keepalive=self.bus.keepalive_s)
            except OSError as error:
                raise BusError(f"{edge.node_id}: cannot connect to {self.bus.host}:{self.bus.port}: {error}") from error
            self.selector.register(edge.client.socket(), selectors.EVENT_READ, edge)
            opened += 1
            self.run_for(0.0)  # read CONNACKs as we go: the broker times out a silent new connection
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(e.connected for e in self.edges.values()):
            self.run_for(0.2)
        return opened

    def run_for(self, seconds: float) -> None:
        """Serve every connection (reads, writes, keep-alive pings, heartbeats) for `seconds`.

        Each pass costs what is due, not the swarm's size: reads of ready sockets, heartbeats from a heap,
        and once a second a sweep for keep-alive pings and unfinished writes.
        """
        deadline = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            wait_s = max(0.0, min(0.05, deadline - now, (self._due[0][0] - now) if self._due else 0.05))
            for key, _ in self.selector.select(timeout=wait_s):
                if key.data.client.loop_read() != paho.MQTT_ERR_SUCCESS:
                    self._lost(key.data, key.fileobj)
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                _, node_id = heapq.heappop(self._due)
                edge = self.edges.get(node_id)
                if edge is not None and edge.connected:
                    self._heartbeat(edge)
                    heapq.heappush(self._due, (now + self.heartbeat_interval_s, node_id))
            if now >= self._next_sweep_at:
                self._next_sweep_at = now + 1.0
                for edge in list(self.edges.values()):
                    if edge.client.want_write():
                        edge.client.loop_write()
                    edge.client.loop_misc()
            if time.monotonic() >= deadline:
                return

    def drop(self, node_ids: list[str]) -> None:
        """Close these edges' sockets without a DISCONNECT, as a crash would: the broker sends their Will."""
        for node_id in node_ids:
            edge = self.edges.pop(node_id)
            sock = edge.client.socket()
            if sock is not None:
                self.selector.unregister(sock)
                sock.close()

    def close(self) -> None:
        for edge in self.edges.values():
            edge.client.disconnect()
            edge.client.loop_write()

    # ---- per edge --------------------------------------------------------------------------------

    def _lost(self, edge: _Edge, sock: object) -> None:
        """The broker closed the connection (this stand-in does not reconnect): stop serving it."""
        self.selector.unregister(sock)
        edge.connected = False
        self.edges.pop(edge.node_id, None)
        logger.warning("%s: connection lost", edge.node_id)

    def _on_connect(self, edge: _Edge, reason: object) -> None:
        if getattr(reason, "is_failure", False):
            logger.warning("%s: connection refused: %s", edge.node_id, reason)
            return
        first = not edge.connected
        edge.connected = True
        edge.client.subscribe(topics.NODE_COMMAND.topic(node=edge.node_id), qos=1)
        self._birth(edge)
        if first:  # spread the swarm's heartbeats over the interval
            start = time.monotonic() + self._random.uniform(0, self.heartbeat_interval_s)
            heapq.heappush(self._due, (start, edge.node_id))

    def _birth(self, edge: _Edge) -> None:
        birth = NodeBirth(node_id=edge.node_id, role="edge", bd_seq=edge.bd_seq, capabilities=CAPABILITIES,
                          timestamp=time.time())
        edge.client.publish(topics.NODE_BIRTH.topic(node=edge.node_id), birth.to_bytes(), qos=1,
                            retain=topics.NODE_BIRTH.retain)

    def _heartbeat(self, edge: _Edge) -> None:
        edge.seq += 1
        beat = Heartbeat(node_id=edge.node_id, bd_seq=edge.bd_seq, seq=edge.seq, timestamp=time.time(), cpu_percent=1.0,
                         memory_percent=10.0, memory_used_bytes=1 << 28, load_avg_1m=0.1, gflops=CAPABILITIES.gflops)
        edge.client.publish(topics.NODE_HEARTBEAT.topic(node=edge.node_id), beat.to_bytes(), qos=0)

    def _on_command(self, edge: _Edge, payload: bytes) -> None:
        try:
            command = decode(payload)
        except MessageError:
            return
        if isinstance(command, NodeCommand) and command.kind == "rebirth":
            self._birth(edge)
