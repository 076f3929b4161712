"""Pure round bookkeeping and the cost model."""

from fleet_center.cost_model import CostInputs, ModelProfile, NodeFigures, build_fleet
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


PROFILE = ModelProfile("m", size_bytes=100, token_time_s=0.02, load_time_s=1.0, prior_quality=0.4)


def test_token_time_scales_with_node_speed_until_measured():
    inputs = CostInputs(models=(PROFILE,), reference_gflops=10.0)
    fleet = build_fleet([NodeFigures("slow", 1000, gflops=5.0), NodeFigures("fast", 1000, gflops=20.0)], inputs)
    times = {edge.edge_id: edge.token_time_s["m"] for edge in fleet.edges}
    assert times == {"slow": 0.04, "fast": 0.01}
    measured = CostInputs(models=(PROFILE,), reference_gflops=10.0, measured_token_time_s={("slow", "m"): 0.005})
    fleet = build_fleet([NodeFigures("slow", 1000, gflops=5.0)], measured)
    assert fleet.edges[0].token_time_s["m"] == 0.005


def test_quality_prior_is_replaced_by_evaluations_and_queue_costs_time():
    inputs = CostInputs(models=(PROFILE,), reference_gflops=10.0, measured_quality={("m", 2): 0.9}, mean_task_s=3.0)
    fleet = build_fleet([NodeFigures("e", 1000, gflops=10.0, queue_depth=2)], inputs)
    assert fleet.quality["m"] == (0.4, 0.4, 0.9, 0.4, 0.4)
    assert fleet.edges[0].queue_delay_s == 6.0
    assert fleet.edges[0].memory_bytes == 500  # half the node's memory is for models


def test_a_model_measured_elsewhere_predicts_unmeasured_nodes_by_their_speed():
    inputs = CostInputs(models=(PROFILE,), reference_gflops=10.0, measured_token_time_s={("a", "m"): 0.004})
    fleet = build_fleet([NodeFigures("a", 1000, gflops=10.0), NodeFigures("b", 1000, gflops=5.0)], inputs)
    times = {edge.edge_id: edge.token_time_s["m"] for edge in fleet.edges}
    assert times == {"a": 0.004, "b": 0.008}  # not the profile's 0.02 / 0.5 = 0.04
