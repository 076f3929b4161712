"""Routers as pure decisions: no broker, no model, no clock."""

import pytest

from routing.features import SCALAR_COLUMNS, QueryFeatures
from routing.miner import MinerModel
from routing.routers import (
    CLOUD_ONLY,
    EDGE_ONLY,
    EdgeState,
    MinerRouter,
    OracleRouter,
    RandomRouter,
    ResourceRouter,
    RoutingQuery,
    cloud_share,
    make_router,
)


def _query(query_id: str = "t1", **kwargs) -> RoutingQuery:
    return RoutingQuery(query_id, 0, **kwargs)


def _miner(weight_on_entropy: float, threshold: float = 0.5) -> MinerModel:
    scalars = len(SCALAR_COLUMNS)
    coef = [0.0] * (6 + scalars)
    coef[6 + SCALAR_COLUMNS.index("entropy_mean")] = weight_on_entropy
    return MinerModel((0.0,) * scalars, (1.0,) * scalars, (), (), (), tuple(coef), 0.0, threshold)


def _features(entropy: float) -> QueryFeatures:
    scalars = [0.0] * len(SCALAR_COLUMNS)
    scalars[SCALAR_COLUMNS.index("entropy_mean")] = entropy
    return QueryFeatures(0, tuple(scalars), ())


def test_edge_only_keeps_every_query_on_the_edge():
    assert EDGE_ONLY.route(_query()).route == "edge"


def test_cloud_only_sends_every_query_to_the_cloud():
    assert CLOUD_ONLY.route(_query()).route == "cloud"


def test_random_router_sends_about_its_probability_to_the_cloud():
    router = RandomRouter(0.3, seed=1)
    decisions = [router.route(_query(f"task-{i}")) for i in range(4000)]
    assert cloud_share(decisions) == pytest.approx(0.3, abs=0.03)


def test_random_router_gives_the_same_decision_for_the_same_query():
    first, second = RandomRouter(0.5, seed=7), RandomRouter(0.5, seed=7)
    assert [first.route(_query(f"q{i}")).route for i in range(50)] == [second.route(_query(f"q{i}")).route
                                                                        for i in range(50)]


def test_random_router_rejects_a_probability_above_one():
    with pytest.raises(ValueError, match="outside"):
        RandomRouter(1.5)


def test_oracle_sends_to_the_cloud_exactly_when_the_edge_scored_lower():
    oracle = OracleRouter({"a": (0.2, 0.9), "b": (0.9, 0.2), "c": (0.5, 0.5)})
    assert [oracle.route(_query(q)).route for q in "abc"] == ["cloud", "edge", "edge"]


def test_oracle_refuses_a_query_it_has_no_scores_for():
    with pytest.raises(KeyError):
        OracleRouter({}).route(_query("unknown"))


def test_resource_router_offloads_a_long_edge_queue():
    assert ResourceRouter(max_queue_depth=2).route(_query(edge_state=EdgeState(queue_depth=5))).route == "cloud"


def test_resource_router_offloads_a_busy_cpu():
    assert ResourceRouter().route(_query(edge_state=EdgeState(cpu_percent=99.0))).route == "cloud"


def test_resource_router_keeps_queries_local_over_a_slow_link():
    state = EdgeState(queue_depth=50, link_rtt_ms=500.0)
    assert ResourceRouter(max_link_rtt_ms=200.0).route(_query(edge_state=state)).route == "edge"


def test_resource_router_keeps_queries_on_an_idle_edge():
    assert ResourceRouter().route(_query(edge_state=EdgeState())).route == "edge"


def test_miner_router_sends_uncertain_queries_to_the_cloud():
    router = MinerRouter(_miner(weight_on_entropy=2.0))
    assert router.route(_query(features=_features(3.0))).route == "cloud"
    assert router.route(_query(features=_features(-3.0))).route == "edge"


def test_miner_router_threshold_sets_how_much_goes_to_the_cloud():
    queries = [_query(f"q{i}", features=_features(e)) for i, e in enumerate([-2, -1, 0, 1, 2])]
    low, high = MinerRouter(_miner(1.0), threshold=0.1), MinerRouter(_miner(1.0), threshold=0.9)
    assert cloud_share([low.route(q) for q in queries]) > cloud_share([high.route(q) for q in queries])


def test_miner_router_refuses_a_query_without_features():
    with pytest.raises(ValueError, match="features"):
        MinerRouter(_miner(1.0)).route(_query())


def test_make_router_names_the_known_routers_for_an_unknown_one():
    with pytest.raises(ValueError, match="edge_only"):
        make_router("fastest")


def test_make_router_needs_scores_for_the_oracle():
    with pytest.raises(ValueError, match="scores"):
        make_router("oracle")
