"""The cost model: learned estimates, exploration, host sharing and quality floors (pure, no clock)."""

import pytest

from fleet_center.cost_model import CostInputs, ModelProfile, NodeFigures, build_fleet, host_speeds
from fleet_center.estimates import Estimate, Exploration, observe, planned_time

PROFILE = ModelProfile("m", size_bytes=100, token_time_s=0.02, load_time_s=1.0, prior_quality=0.4)
NO_BONUS = Exploration(bonus=0.0)


def measured(mean, samples=50, at=0.0):
    return Estimate(mean, 0.0, samples, at)


def test_token_time_scales_with_node_speed_until_measured():
    inputs = CostInputs(models=(PROFILE,), reference_gflops=10.0, exploration=NO_BONUS)
    fleet = build_fleet([NodeFigures("slow", 1000, gflops=5.0), NodeFigures("fast", 1000, gflops=20.0)], inputs)
    assert {e.edge_id: e.token_time_s["m"] for e in fleet.edges} == {"slow": 0.04, "fast": 0.01}
    learned = CostInputs(models=(PROFILE,), reference_gflops=10.0, exploration=NO_BONUS,
                         token_estimates={("slow", "m"): measured(0.005)})
    assert build_fleet([NodeFigures("slow", 1000, gflops=5.0)], learned).edges[0].token_time_s["m"] == 0.005


def test_a_model_measured_elsewhere_predicts_unmeasured_nodes_by_their_speed():
    inputs = CostInputs(models=(PROFILE,), reference_gflops=10.0, exploration=NO_BONUS,
                        token_estimates={("a", "m"): measured(0.004)})
    fleet = build_fleet([NodeFigures("a", 1000, gflops=10.0), NodeFigures("b", 1000, gflops=5.0)], inputs)
    assert {e.edge_id: e.token_time_s["m"] for e in fleet.edges} == {"a": 0.004, "b": 0.008}


def test_an_unmeasured_pair_is_planned_faster_than_a_measured_one_of_the_same_speed():
    inputs = CostInputs(models=(PROFILE,), reference_gflops=10.0, token_estimates={("a", "m"): measured(0.01)})
    fleet = build_fleet([NodeFigures("a", 1000, gflops=10.0), NodeFigures("b", 1000, gflops=10.0)], inputs)
    times = {e.edge_id: e.token_time_s["m"] for e in fleet.edges}
    assert times["b"] < times["a"] < 0.01  # b: full bonus; a: measured 50 times, a small one


def test_the_bonus_shrinks_with_samples_and_returns_as_they_age():
    exploration = Exploration(bonus=0.3, half_life_s=100.0)
    fresh, many = measured(1.0, samples=1, at=0.0), measured(1.0, samples=100, at=0.0)
    assert planned_time(None, 1.0, 0.0, exploration) == pytest.approx(0.7)
    assert planned_time(fresh, 1.0, 0.0, exploration) > planned_time(None, 1.0, 0.0, exploration)
    assert planned_time(many, 1.0, 0.0, exploration) > planned_time(fresh, 1.0, 0.0, exploration)
    assert planned_time(many, 1.0, 1000.0, exploration) < planned_time(many, 1.0, 0.0, exploration)


def test_observe_moves_the_mean_and_tracks_the_spread():
    estimate = None
    for value in (1.0, 3.0, 1.0, 3.0):
        estimate = observe(estimate, value, now=1.0, weight=0.5)
    assert 1.0 < estimate.mean < 3.0 and estimate.variance > 0.5 and estimate.samples == 4
    assert estimate.stderr(1.0, 100.0) < estimate.stderr(1000.0, 100.0)


def test_nodes_on_one_host_share_its_best_probe():
    nodes = [NodeFigures("pi-01", 1, gflops=188.0, host_id="h"), NodeFigures("pi-02", 1, gflops=4.7, host_id="h"),
             NodeFigures("pi-03", 1, gflops=5.1, host_id="other")]
    assert host_speeds(nodes) == {"pi-01": 188.0, "pi-02": 188.0, "pi-03": 5.1}


def test_a_crowded_host_slows_profile_estimates():
    node = NodeFigures("e", 1000, gflops=10.0, host_id="h", cores=2)
    alone = CostInputs(models=(PROFILE,), reference_gflops=10.0, exploration=NO_BONUS, nodes_per_host={"h": 1})
    crowded = CostInputs(models=(PROFILE,), reference_gflops=10.0, exploration=NO_BONUS, nodes_per_host={"h": 4})
    assert build_fleet([node], alone).edges[0].token_time_s["m"] == pytest.approx(0.02)
    assert build_fleet([node], crowded).edges[0].token_time_s["m"] == pytest.approx(0.04)


def test_queue_costs_time_and_half_the_memory_is_for_models():
    inputs = CostInputs(models=(PROFILE,), reference_gflops=10.0, mean_task_s=3.0)
    fleet = build_fleet([NodeFigures("e", 1000, gflops=10.0, queue_depth=2)], inputs)
    assert fleet.edges[0].queue_delay_s == 6.0 and fleet.edges[0].memory_bytes == 500


FP32 = ModelProfile("fp32", 500, token_time_s=0.05, load_time_s=1.0, prior_quality=0.5)
INT8 = ModelProfile("int8", 150, token_time_s=0.02, load_time_s=1.0, prior_quality=0.22)


def test_a_model_measured_at_half_the_best_quality_is_below_the_floor():
    quality = {("fp32", 1): measured(0.4), ("int8", 1): measured(0.2)}
    fleet = build_fleet([NodeFigures("e", 10_000, gflops=10.0)],
                        CostInputs(models=(FP32, INT8), reference_gflops=10.0, quality_estimates=quality))
    assert fleet.quality_floor[1] == pytest.approx(0.36)
    assert fleet.quality["int8"][1] < fleet.quality_floor[1] <= fleet.quality["fp32"][1]


def test_unmeasured_models_are_judged_on_the_measured_scale():
    """fp32 measured at 0.15 on a type: int8's prior (0.22 of a 0.5 scale) is anchored to it, not taken raw."""
    fleet = build_fleet([NodeFigures("e", 10_000, gflops=10.0)],
                        CostInputs(models=(FP32, INT8), reference_gflops=10.0, exploration=NO_BONUS,
                                   quality_estimates={("fp32", 0): measured(0.15)}))
    assert fleet.quality["int8"][0] == pytest.approx(0.15 * 0.22 / 0.5)
    assert fleet.quality["int8"][0] < fleet.quality_floor[0]


def test_the_cloud_takes_its_models_measured_quality():
    fleet = build_fleet([NodeFigures("e", 10_000, gflops=10.0)],
                        CostInputs(models=(FP32, INT8), reference_gflops=10.0, cloud_model="fp32", exploration=NO_BONUS,
                                   quality_estimates={("fp32", 3): measured(0.3)}))
    assert fleet.cloud.quality[3] == pytest.approx(0.3)


def test_three_identical_edges_on_one_host_all_get_work_despite_a_bad_start_up_probe():
    """The make-run failure: pi-01 probed 188 GFLOPS, pi-02/03 4.7 and 5.1 while models loaded; pi-01 was measured."""
    from fleet_center.scheduling import problem as sched
    from fleet_center.scheduling.solvers import make_scheduler

    nodes = [NodeFigures("pi-01", 10_000, gflops=188.0, host_id="h", cores=2),
             NodeFigures("pi-02", 10_000, gflops=4.7, host_id="h", cores=2),
             NodeFigures("pi-03", 10_000, gflops=5.1, host_id="h", cores=2)]
    inputs = CostInputs(models=(PROFILE,), reference_gflops=100.0, cloud_latency_s=30.0, nodes_per_host={"h": 4},
                        token_estimates={("pi-01", "m"): measured(0.05, samples=40)})
    fleet = build_fleet(nodes, inputs)
    tasks = tuple(sched.TaskSpec(f"t{i}", i % 5, 48) for i in range(9))
    placement = sched.Placement({node.node_id: frozenset({"m"}) for node in nodes})
    plan = make_scheduler("fast").offload(sched.OffloadingProblem(fleet=fleet, tasks=tasks, placement=placement))
    per_edge = {node.node_id: len(plan.tasks_for(node.node_id)) for node in nodes}
    assert min(per_edge.values()) >= 2, per_edge


def test_nodes_on_one_host_plan_with_the_hosts_mean_and_their_own_exploration():
    nodes = [NodeFigures("a", 1000, gflops=10.0, host_id="h"), NodeFigures("b", 1000, gflops=10.0, host_id="h")]
    estimates = {("a", "m"): measured(0.010, samples=30), ("b", "m"): measured(0.040, samples=3)}
    times = {e.edge_id: e.token_time_s["m"] for e in build_fleet(nodes, CostInputs(
        models=(PROFILE,), reference_gflops=10.0, token_estimates=estimates)).edges}
    assert times["b"] < times["a"] < 0.02  # one slow sample does not brand b slow; b is explored more
