"""Node-side membership, shared by edge and cloud nodes (Sparkplug-style).

The node sets its Last Will (a death carrying the session's bdSeq) before every connection, waits
for the center's retained `state/center` to say online, publishes a retained birth with the same
bdSeq, then heartbeats. A new bdSeq is taken for every connection and persisted, so a death from an
older session (delivered late) is recognisably stale. When the center comes back online, or asks
with a `rebirth` command, the node publishes its birth again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from broker import topics
from broker.client import BusClient, Envelope, Will
from broker.config import BusConfig
from broker.messages.membership import (
    Capabilities,
    CenterState,
    Heartbeat,
    LoadedModelStatus,
    NodeBirth,
    NodeCommand,
    NodeDeath,
    NodeRole,
)
from runtime.capabilities import SpeedProbe, measure_capabilities
from runtime.resources import CpuMeter, take_snapshot

logger = logging.getLogger(__name__)


@dataclass
class NodeProbes:
    """Callbacks the node's service gives presence, read at every birth and heartbeat."""

    queue_depth: Callable[[], int] = lambda: 0
    loaded_models: Callable[[], tuple[LoadedModelStatus, ...]] = tuple
    models_in_store: Callable[[], tuple[str, ...]] = tuple
    counters: Callable[[], dict[str, float]] = dict


@dataclass
class BdSeqCounter:
    """Birth/death sequence number, persisted so it keeps increasing across process restarts."""

    path: Path | None
    value: int = field(default=-1, init=False)

    def next(self) -> int:
        if self.value < 0:
            self.value = self._read()
        self.value += 1
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(str(self.value))
            except OSError as error:
                logger.warning("cannot persist bdSeq to %s: %s", self.path, error)
        return self.value

    def _read(self) -> int:
        try:
            return int(self.path.read_text()) if self.path is not None else int(time.time() * 1000)
        except (OSError, ValueError):
            # No state yet: a millisecond clock still orders this session after earlier ones.
            return int(time.time() * 1000)


class NodePresence:
    """Connects a node to the bus and keeps it registered with the center."""

    def __init__(
        self,
        node_id: str,
        role: NodeRole,
        bus_config: BusConfig,
        heartbeat_interval_s: float = 2.0,
        probes: NodeProbes | None = None,
        state_dir: Path | None = None,
        http_url: str = "",
        capabilities: Capabilities | None = None,
    ) -> None:
        self.node_id = node_id
        self.role = role
        self._cpu_meter = CpuMeter()
        self.heartbeat_interval_s = heartbeat_interval_s
        self.probes = probes or NodeProbes()
        # Given capabilities (tests, benchmarks of many simulated nodes) are taken as they are: no probing.
        self.speed: SpeedProbe | None = None
        if capabilities is None:
            self.speed = SpeedProbe()
            self.speed.maybe_probe()  # the first probe, at start
            capabilities = measure_capabilities(http_url=http_url, gflops=self.speed.gflops)
        self.capabilities = capabilities
        self.center_online = threading.Event()
        self.command_handlers: dict[str, Callable[[NodeCommand], None]] = {}
        self._bd_seq = BdSeqCounter(state_dir / f"{node_id}.bdseq" if state_dir else None)
        self._current_bd_seq = -1
        self._heartbeat_seq = 0
        self._stop = threading.Event()
        self._birth_lock = threading.Lock()
        self.bus = BusClient(node_id, bus_config.for_node(node_id), will_factory=self._next_will)
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{node_id}", daemon=True)

    @property
    def bd_seq(self) -> int:
        return self._current_bd_seq

    def start(self, timeout_s: float | None = None) -> NodePresence:
        """Connect; the birth follows as soon as the center is online. Raises BusError."""
        self.bus.subscribe(topics.CENTER_STATE, self._on_center_state)
        self.bus.subscribe(topics.NODE_COMMAND, self._on_command, node=self.node_id)
        self.bus.connect(timeout_s)
        self._heartbeat_thread.start()
        return self

    def wait_for_center(self, timeout_s: float) -> bool:
        return self.center_online.wait(timeout_s)

    def stop(self) -> None:
        """Clean shutdown: publish our death now (the broker would only after the keep-alive)."""
        self._stop.set()
        if self.bus.connected:
            try:
                death = NodeDeath(node_id=self.node_id, bd_seq=self._current_bd_seq)
                self.bus.publish(topics.NODE_DEATH, death, wait_s=2.0, node=self.node_id)
            except Exception as error:  # shutting down: report, don't raise
                logger.warning("%s: could not publish death: %s", self.node_id, error)
        self.bus.close()

    def crash(self) -> None:
        """Vanish without a goodbye, as a power cut would (tests and benchmarks)."""
        self._stop.set()
        self.bus.abort()

    def publish_birth(self) -> None:
        """(Re)announce this node. Safe to call from any thread."""
        with self._birth_lock:
            birth = NodeBirth(
                node_id=self.node_id,
                role=self.role,
                bd_seq=self._current_bd_seq,
                capabilities=self.capabilities,
                timestamp=time.time(),
                models_in_store=tuple(self.probes.models_in_store()),
                loaded_models=tuple(self.probes.loaded_models()),
            )
            self.bus.publish(topics.NODE_BIRTH, birth, node=self.node_id)
        logger.info("%s: birth published (bdSeq %d)", self.node_id, birth.bd_seq)

    def heartbeat(self) -> Heartbeat:
        if self.speed is not None:
            self.speed.maybe_probe()  # a few ms on a server, ~50 ms on a Pi: fine on the heartbeat thread
        sample = take_snapshot(self._cpu_meter)  # CPU since the previous heartbeat
        self._heartbeat_seq += 1
        counters = {name: float(value) for name, value in self.bus.stats.counts.items()}
        counters.update(self.probes.counters())
        return Heartbeat(
            node_id=self.node_id,
            bd_seq=self._current_bd_seq,
            seq=self._heartbeat_seq,
            timestamp=time.time(),
            cpu_percent=sample.cpu_percent,
            memory_percent=sample.memory_percent,
            memory_used_bytes=sample.memory_used_bytes,
            load_avg_1m=sample.load_avg_1m,
            queue_depth=self.probes.queue_depth(),
            loaded_models=tuple(self.probes.loaded_models()),
            counters=counters,
            gflops=round(self.speed.gflops if self.speed is not None else self.capabilities.gflops, 2),
        )

    # ---- handlers --------------------------------------------------------------------------------

    def _next_will(self) -> Will:
        self._current_bd_seq = self._bd_seq.next()
        death = NodeDeath(node_id=self.node_id, bd_seq=self._current_bd_seq)
        return Will(topics.NODE_DEATH.topic(node=self.node_id), death, qos=1, retain=topics.NODE_DEATH.retain)

    def _on_center_state(self, envelope: Envelope) -> None:
        state = envelope.message
        assert isinstance(state, CenterState)
        if not state.online:
            logger.info("%s: center %s is offline", self.node_id, state.center_id)
            self.center_online.clear()
            return
        # Every time the center (re)appears it needs our birth; so does a reconnect of ours, since
        # the broker re-sends the retained center state to every new subscription.
        self.center_online.set()
        self.publish_birth()

    def _on_command(self, envelope: Envelope) -> None:
        command = envelope.message
        assert isinstance(command, NodeCommand)
        if command.kind == "rebirth":
            self.publish_birth()
            return
        handler = self.command_handlers.get(command.kind)
        if handler is None:
            logger.warning("%s: no handler for command %s", self.node_id, command.kind)
            return
        handler(command)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s):
            if not (self.bus.connected and self.center_online.is_set()):
                continue
            try:
                self.bus.publish(topics.NODE_HEARTBEAT, self.heartbeat(), node=self.node_id)
            except Exception:
                logger.exception("%s: heartbeat failed", self.node_id)
