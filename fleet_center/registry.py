"""The center's view of fleet membership as a pure reducer: `apply(state, event) -> (state, changes)`.

Sparkplug rules: a birth starts a node session identified by bdSeq; a death ends the session whose
bdSeq it carries and is stale (ignored) if that session is older than the current birth; a node
that stays silent past the heartbeat timeout is offline too. Births and deaths are retained, so a
center that starts late replays them in any order and still ends up with the right picture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Literal

from broker.messages.membership import Capabilities, Heartbeat, LoadedModelStatus, NodeBirth, NodeDeath

logger = logging.getLogger(__name__)

OfflineReason = Literal["", "death", "missed_heartbeats"]
ChangeKind = Literal["joined", "rejoined", "offline", "stale_death_ignored", "unknown_node"]


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """Everything the center knows about one node."""

    node_id: str
    role: str
    online: bool
    bd_seq: int  # session of the latest birth
    capabilities: Capabilities
    birth_at: float
    last_seen: float  # last birth or heartbeat, center clock
    dead_bd_seq: int = -1  # highest bdSeq a death was seen for
    offline_reason: OfflineReason = ""
    offline_at: float | None = None
    models_in_store: tuple[str, ...] = ()
    loaded_models: tuple[LoadedModelStatus, ...] = ()
    last_heartbeat: Heartbeat | None = None

    def heartbeat_age_s(self, now: float) -> float:
        return max(0.0, now - self.last_seen)


@dataclass(frozen=True, slots=True)
class FleetState:
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    deaths_before_birth: dict[str, int] = field(default_factory=dict)  # retained deaths replayed first

    def online(self, role: str | None = None) -> list[NodeRecord]:
        return [n for n in self.nodes.values() if n.online and (role is None or n.role == role)]


@dataclass(frozen=True, slots=True)
class Change:
    """A membership change worth logging and telling the rest of the center about."""

    kind: ChangeKind
    node_id: str
    bd_seq: int
    at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BirthSeen:
    birth: NodeBirth
    now: float


@dataclass(frozen=True, slots=True)
class DeathSeen:
    death: NodeDeath
    now: float


@dataclass(frozen=True, slots=True)
class HeartbeatSeen:
    heartbeat: Heartbeat
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


Event = BirthSeen | DeathSeen | HeartbeatSeen | Tick


def apply(state: FleetState, event: Event, heartbeat_timeout_s: float) -> tuple[FleetState, list[Change]]:
    """Next membership state and the changes it implies."""
    match event:
        case BirthSeen(birth, now):
            return _on_birth(state, birth, now)
        case DeathSeen(death, now):
            return _on_death(state, death, now)
        case HeartbeatSeen(heartbeat, now):
            return _on_heartbeat(state, heartbeat, now)
        case Tick(now):
            return _on_tick(state, now, heartbeat_timeout_s)
    raise TypeError(f"unknown membership event {event!r}")


def _with(state: FleetState, record: NodeRecord) -> FleetState:
    return replace(state, nodes={**state.nodes, record.node_id: record})


def _on_birth(state: FleetState, birth: NodeBirth, now: float) -> tuple[FleetState, list[Change]]:
    old = state.nodes.get(birth.node_id)
    dead_bd_seq = max(old.dead_bd_seq if old else -1, state.deaths_before_birth.get(birth.node_id, -1))
    if old is not None and birth.bd_seq < old.bd_seq:
        return state, []  # an older session's birth arriving late
    alive = birth.bd_seq > dead_bd_seq
    record = NodeRecord(
        node_id=birth.node_id,
        role=birth.role,
        online=alive,
        bd_seq=birth.bd_seq,
        capabilities=birth.capabilities,
        birth_at=now,
        last_seen=now,
        dead_bd_seq=dead_bd_seq,
        offline_reason="" if alive else "death",
        offline_at=None if alive else now,
        models_in_store=birth.models_in_store,
        loaded_models=birth.loaded_models,
    )
    if not alive:
        return _with(state, record), []
    if old is not None and old.online and old.bd_seq == birth.bd_seq:
        # A rebirth of the same session (asked for, or after the center returned): nothing changed.
        return _with(state, replace(record, birth_at=old.birth_at, last_heartbeat=old.last_heartbeat)), []
    kind: ChangeKind = "joined" if old is None else "rejoined"
    return _with(state, record), [Change(kind, birth.node_id, birth.bd_seq, now)]


def _on_death(state: FleetState, death: NodeDeath, now: float) -> tuple[FleetState, list[Change]]:
    old = state.nodes.get(death.node_id)
    if old is None:
        earlier = state.deaths_before_birth.get(death.node_id, -1)
        deaths = {**state.deaths_before_birth, death.node_id: max(earlier, death.bd_seq)}
        return replace(state, deaths_before_birth=deaths), []
    if death.bd_seq < old.bd_seq:
        return state, [Change("stale_death_ignored", death.node_id, death.bd_seq, now, f"current bdSeq {old.bd_seq}")]
    record = replace(old, dead_bd_seq=max(old.dead_bd_seq, death.bd_seq))
    if not old.online:
        return _with(state, record), []
    record = replace(record, online=False, offline_reason="death", offline_at=now)
    return _with(state, record), [Change("offline", death.node_id, death.bd_seq, now, "death")]


def _on_heartbeat(state: FleetState, heartbeat: Heartbeat, now: float) -> tuple[FleetState, list[Change]]:
    old = state.nodes.get(heartbeat.node_id)
    if old is None or heartbeat.bd_seq != old.bd_seq:
        # A node we have no birth for (or from a session we have not seen born): ask it to rebirth.
        return state, [Change("unknown_node", heartbeat.node_id, heartbeat.bd_seq, now, "heartbeat without birth")]
    record = replace(old, last_seen=now, last_heartbeat=heartbeat, loaded_models=heartbeat.loaded_models)
    changes: list[Change] = []
    if not old.online:
        if old.dead_bd_seq >= heartbeat.bd_seq:
            return state, []  # that session is dead; a late heartbeat changes nothing
        record = replace(record, online=True, offline_reason="", offline_at=None)
        changes.append(Change("rejoined", heartbeat.node_id, heartbeat.bd_seq, now, "heartbeat after timeout"))
    return _with(state, record), changes


def _on_tick(state: FleetState, now: float, heartbeat_timeout_s: float) -> tuple[FleetState, list[Change]]:
    silent = [n for n in state.nodes.values() if n.online and now - n.last_seen > heartbeat_timeout_s]
    if not silent:
        return state, []
    nodes = dict(state.nodes)
    changes = []
    for node in silent:
        nodes[node.node_id] = replace(node, online=False, offline_reason="missed_heartbeats", offline_at=now)
        changes.append(Change("offline", node.node_id, node.bd_seq, now, "missed_heartbeats"))
    return replace(state, nodes=nodes), changes
