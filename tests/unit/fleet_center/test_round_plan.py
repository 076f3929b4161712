"""Pure round bookkeeping and the cost model."""

from fleet_center.round_plan import Outstanding, is_caching_round, overdue, reassignment_target


def test_every_21st_round_caches():
    caching = [r for r in range(63) if is_caching_round(r, 20)]
    assert caching == [20, 41, 62]


def test_overdue_catches_dead_nodes_and_passed_deadlines():
    items = {
        "a": Outstanding("a", "pi-01", "m", deadline=100.0, attempts=1),
        "b": Outstanding("b", "pi-02", "m", deadline=50.0, attempts=1),
        "c": Outstanding("c", "pi-03", "m", deadline=100.0, attempts=1),
    }
    late = overdue(items, now=60.0, online={"pi-01", "pi-02"})
    assert sorted(item.instance_id for item in late) == ["b", "c"]


def test_reassignment_avoids_the_node_that_failed():
    assert reassignment_target("pi-01", ["pi-01", "pi-02"]) == "pi-02"
    assert reassignment_target("pi-01", ["pi-01"]) is None


