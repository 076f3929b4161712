"""The center's membership service: publishes its own state, feeds births/deaths/heartbeats to the registry."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from broker import topics
from broker.client import BusClient, Envelope, Will
from broker.messages.membership import CenterState, Heartbeat, NodeBirth, NodeCommand, NodeDeath
from fleet_center import registry
from fleet_center.config import CenterConfig

logger = logging.getLogger(__name__)

ChangeListener = Callable[[registry.Change, registry.FleetState], None]


class FleetMembership:
    """Keeps `state` (a registry.FleetState) current and tells listeners about changes."""

    def __init__(self, config: CenterConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.state = registry.FleetState()
        self.listeners: list[ChangeListener] = []
        self.heartbeat_listeners: list[Callable[[Heartbeat], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        offline = CenterState(online=False, center_id=config.center_id, timestamp=0.0)
        will = Will(topics.CENTER_STATE.topic(), offline, qos=1, retain=True)
        self.bus = BusClient(config.center_id, config.bus.for_node(config.center_id), will=will)
        self._rebirth_requested_at: dict[str, float] = {}
        self._ticker = threading.Thread(target=self._tick_loop, name="membership-tick", daemon=True)

    def start(self) -> FleetMembership:
        """Connect, learn the fleet from retained births, then announce the center online. Raises BusError."""
        self.bus.subscribe(topics.NODE_BIRTH, self._on_birth)
        self.bus.subscribe(topics.NODE_DEATH, self._on_death)
        self.bus.subscribe(topics.NODE_HEARTBEAT, self._on_heartbeat)
        self.bus.on_connect(self._announce)
        self.bus.connect()
        self._ticker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.bus.connected:
            offline = CenterState(online=False, center_id=self.config.center_id, timestamp=time.time())
            try:
                self.bus.publish(topics.CENTER_STATE, offline, wait_s=2.0)
            except Exception as error:
                logger.warning("could not publish center offline: %s", error)
        self.bus.close()

    def snapshot(self) -> registry.FleetState:
        with self._lock:
            return self.state

    def request_rebirth(self, node_id: str) -> None:
        command = NodeCommand(command_id=f"rebirth-{int(time.time() * 1000)}", kind="rebirth")
        self.bus.publish(topics.NODE_COMMAND, command, node=node_id)

    # ---- bus handlers ----------------------------------------------------------------------------

    def _announce(self) -> None:
        online = CenterState(online=True, center_id=self.config.center_id, timestamp=time.time())
        self.bus.publish(topics.CENTER_STATE, online)
        logger.info("center %s online", self.config.center_id)

    def _on_birth(self, envelope: Envelope) -> None:
        birth = envelope.message
        assert isinstance(birth, NodeBirth)
        if not self._sender_matches(envelope, birth.node_id):
            return
        self._apply(registry.BirthSeen(birth, self.clock()))

    def _on_death(self, envelope: Envelope) -> None:
        death = envelope.message
        assert isinstance(death, NodeDeath)
        if not self._sender_matches(envelope, death.node_id):
            return
        self._apply(registry.DeathSeen(death, self.clock()))

    def _on_heartbeat(self, envelope: Envelope) -> None:
        heartbeat = envelope.message
        assert isinstance(heartbeat, Heartbeat)
        if not self._sender_matches(envelope, heartbeat.node_id):
            return
        self._apply(registry.HeartbeatSeen(heartbeat, self.clock()))
        for listener in self.heartbeat_listeners:
            try:
                listener(heartbeat)
            except Exception:
                logger.exception("heartbeat listener failed")

    def _sender_matches(self, envelope: Envelope, node_id: str) -> bool:
        if envelope.params.get("node") != node_id:
            self.bus.stats.add("malformed")
            logger.warning("dropped message on %s naming node %s", envelope.topic, node_id)
            return False
        return True

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.config.tick_interval_s):
            self._apply(registry.Tick(self.clock()))

    def _apply(self, event: registry.Event) -> None:
        with self._lock:
            self.state, changes = registry.apply(self.state, event, self.config.heartbeat_timeout_s)
            state = self.state
        for change in changes:
            self._report(change, state)

    def _report(self, change: registry.Change, state: registry.FleetState) -> None:
        if change.kind == "unknown_node":
            # Heartbeats keep coming until the birth does: ask at most once per heartbeat timeout.
            last = self._rebirth_requested_at.get(change.node_id, float("-inf"))
            if change.at - last >= self.config.heartbeat_timeout_s:
                self._rebirth_requested_at[change.node_id] = change.at
                logger.info("heartbeat from %s without a birth: asking it to rebirth", change.node_id)
                self.request_rebirth(change.node_id)
        elif change.kind == "stale_death_ignored":
            logger.info("stale death of %s (bdSeq %d) ignored: %s", change.node_id, change.bd_seq, change.reason)
        else:
            logger.info("node %s %s (bdSeq %d) %s", change.node_id, change.kind, change.bd_seq, change.reason)
        for listener in self.listeners:
            try:
                listener(change, state)
            except Exception:
                logger.exception("membership listener failed on %s", change)
