"""The /health verdict from plain facts."""

from edge_node.health import HealthFacts, assess


def facts(**changes):
    values = {"bus_connected": True, "worker_alive": True, "stopping": False, "queue_depth": 0, "queue_capacity": 8}
    return HealthFacts(**{**values, **changes})


def test_a_node_with_bus_worker_and_room_is_ok():
    assert assess(facts()).status == "ok" and assess(facts()).http_status == 200


def test_without_the_bus_the_node_still_serves_http():
    health = assess(facts(bus_connected=False))
    assert (health.status, health.http_status) == ("degraded", 200)


def test_a_dead_worker_a_stopping_node_or_a_full_queue_cannot_serve():
    for changes, problem in (({"worker_alive": False}, "worker"), ({"stopping": True}, "stopping"),
                             ({"queue_depth": 8}, "queue full")):
        health = assess(facts(**changes))
        assert health.http_status == 503 and any(problem in text for text in health.problems)

