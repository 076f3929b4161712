"""Membership reducer: births, deaths ordered by bdSeq, heartbeats and silence."""

from broker.messages import Capabilities, Heartbeat, NodeBirth, NodeDeath
from fleet_center import registry
from fleet_center.registry import BirthSeen, DeathSeen, FleetState, HeartbeatSeen, Tick

TIMEOUT_S = 6.0
CAPS = Capabilities(cores=4, memory_bytes=1 << 30, gflops=2.0)


def birth(node="pi-01", bd_seq=1):
    return NodeBirth(node_id=node, role="edge", bd_seq=bd_seq, capabilities=CAPS, timestamp=0.0)


def beat(node="pi-01", bd_seq=1, seq=1):
    return Heartbeat(node_id=node, bd_seq=bd_seq, seq=seq, timestamp=0.0, cpu_percent=1.0, memory_percent=2.0,
                     memory_used_bytes=3, load_avg_1m=0.1)


def run(events, state=None):
    state = state or FleetState()
    changes = []
    for event in events:
        state, new = registry.apply(state, event, TIMEOUT_S)
        changes += new
    return state, changes


def test_birth_registers_node_online():
    state, changes = run([BirthSeen(birth(), 1.0)])
    assert state.nodes["pi-01"].online
    assert [c.kind for c in changes] == ["joined"]


def test_death_of_current_session_takes_node_offline():
    state, changes = run([BirthSeen(birth(bd_seq=4), 1.0), DeathSeen(NodeDeath(node_id="pi-01", bd_seq=4), 2.0)])
    assert not state.nodes["pi-01"].online
    assert state.nodes["pi-01"].offline_reason == "death"
    assert changes[-1].kind == "offline"


def test_stale_death_is_ignored():
    state, changes = run([BirthSeen(birth(bd_seq=5), 1.0), DeathSeen(NodeDeath(node_id="pi-01", bd_seq=4), 2.0)])
    assert state.nodes["pi-01"].online
    assert changes[-1].kind == "stale_death_ignored"


def test_retained_death_replayed_before_birth_keeps_dead_session_offline():
    # A late center may receive the retained death first; the birth of that same session must not revive it.
    state, _ = run([DeathSeen(NodeDeath(node_id="pi-01", bd_seq=4), 1.0), BirthSeen(birth(bd_seq=4), 1.0)])
    assert not state.nodes["pi-01"].online


def test_retained_old_death_does_not_hide_newer_birth():
    state, _ = run([DeathSeen(NodeDeath(node_id="pi-01", bd_seq=3), 1.0), BirthSeen(birth(bd_seq=4), 1.0)])
    assert state.nodes["pi-01"].online


def test_silence_past_timeout_marks_offline_and_heartbeats_keep_alive():
    state, _ = run([BirthSeen(birth(), 0.0), HeartbeatSeen(beat(), 5.0), Tick(10.0)])
    assert state.nodes["pi-01"].online  # 5 s since the last heartbeat, timeout is 6 s
    state, changes = run([Tick(11.5)], state)
    assert not state.nodes["pi-01"].online
    assert state.nodes["pi-01"].offline_reason == "missed_heartbeats"
    assert [c.kind for c in changes] == ["offline"]


def test_heartbeat_after_timeout_brings_node_back():
    state, changes = run([BirthSeen(birth(), 0.0), Tick(7.0), HeartbeatSeen(beat(seq=9), 8.0)])
    assert state.nodes["pi-01"].online
    assert [c.kind for c in changes] == ["joined", "offline", "rejoined"]


def test_heartbeat_of_dead_session_changes_nothing():
    state, _ = run([BirthSeen(birth(bd_seq=2), 0.0), DeathSeen(NodeDeath(node_id="pi-01", bd_seq=2), 1.0),
                    HeartbeatSeen(beat(bd_seq=2), 1.1)])
    assert not state.nodes["pi-01"].online


def test_heartbeat_without_birth_asks_for_rebirth():
    _, changes = run([HeartbeatSeen(beat(node="pi-09"), 1.0)])
    assert [c.kind for c in changes] == ["unknown_node"]


def test_new_session_after_death_rejoins():
    state, changes = run([
        BirthSeen(birth(bd_seq=1), 0.0), DeathSeen(NodeDeath(node_id="pi-01", bd_seq=1), 1.0), BirthSeen(birth(bd_seq=2), 2.0)
    ])
    assert state.nodes["pi-01"].online
    assert [c.kind for c in changes] == ["joined", "offline", "rejoined"]


def test_older_birth_arriving_late_is_ignored():
    state, _ = run([BirthSeen(birth(bd_seq=5), 0.0), BirthSeen(birth(bd_seq=4), 1.0)])
    assert state.nodes["pi-01"].bd_seq == 5
