from cloud_node.eviction import SessionFigures, expired, lru_victims


def figures(*rows):
    return [SessionFigures(session_id, last_used, size) for session_id, last_used, size in rows]


def test_sessions_idle_past_ttl_expire():
    assert expired(figures(("a", 0.0, 1), ("b", 5.0, 1)), now_s=10.0, ttl_s=6.0) == ["a"]


def test_least_recently_used_are_evicted_until_under_cap():
    sessions = figures(("old", 1.0, 50), ("mid", 2.0, 50), ("new", 3.0, 50))
    assert lru_victims(sessions, cap_bytes=100) == ["old"]
    assert lru_victims(sessions, cap_bytes=50) == ["old", "mid"]


def test_session_being_served_is_never_evicted():
    sessions = figures(("old", 1.0, 50), ("new", 3.0, 50))
    assert lru_victims(sessions, cap_bytes=60, protect="old") == ["new"]


def test_nothing_is_evicted_under_the_cap():
    assert lru_victims(figures(("a", 1.0, 10)), cap_bytes=10) == []
