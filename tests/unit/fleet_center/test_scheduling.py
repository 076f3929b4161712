"""Offloading and caching decisions: hand-solved cases, solver agreement, validation."""

import dataclasses
import itertools

import numpy as np
import pytest

from fleet_center.scheduling import (
    CachingProblem,
    CloudOption,
    EdgeSpec,
    ExactScheduler,
    FastConfig,
    FastScheduler,
    Fleet,
    ModelSpec,
    OffloadingPlan,
    OffloadingProblem,
    Placement,
    ProblemError,
    TaskAssignment,
    TaskSpec,
    TypeDemand,
    evaluate,
    make_scheduler,
)
from fleet_center.scheduling.caching import price_placement
from fleet_center.scheduling.costs import fleet_arrays, plan_from_slots, task_arrays
from fleet_center.scheduling.offloading_exact import solve_offloading_exact
from fleet_center.scheduling.offloading_fast import greedy_loads
from fleet_center.scheduling.random_instances import random_caching, random_offloading

SCHEDULERS = [ExactScheduler(), FastScheduler()]
TC, NER = 0, 1


def one_edge_fleet(floor=(0.0,) * 5, cloud_latency_s=3.2):
    edge = EdgeSpec(
        "e1",
        memory_bytes=1_000,
        token_time_s={"small": 0.1, "big": 0.3},
        load_time_s={"small": 5.0, "big": 20.0},
    )
    return Fleet(
        edges=(edge,),
        models=(ModelSpec("small", 400), ModelSpec("big", 600)),
        quality={"small": (0.9, 0.3, 0.5, 0.5, 0.5), "big": (0.9, 0.8, 0.7, 0.7, 0.7)},
        cloud=CloudOption(quality=(0.95,) * 5, token_time_s=0.0, latency_s=cloud_latency_s),
        quality_floor=floor,
    )


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
def test_hand_instance_queues_short_tasks_and_sends_the_long_one_to_the_cloud(scheduler):
    # One edge at 0.1 s/token; tasks of 10, 20, 25 tokens take 1, 2, 2.5 s; the cloud takes 3.2 s.
    # All on the edge, shortest first: 1 + 3 + 5.5 = 9.5. C to the cloud: 1 + 3 + 3.2 = 7.2.
    # B and C to the cloud: 1 + 3.2 + 3.2 = 7.4. B to the cloud: 1 + 3.5 + 3.2 = 7.7. Optimum 7.2.
    tasks = (TaskSpec("A", TC, 10), TaskSpec("C", TC, 25), TaskSpec("B", TC, 20))
    problem = OffloadingProblem(one_edge_fleet(), tasks, Placement({"e1": frozenset({"small"})}))
    plan = scheduler.offload(problem)
    assert plan.total_latency_s == pytest.approx(7.2)
    assert plan.cloud_task_ids == ("C",)
    assert [(item.task_id, item.latency_s) for item in plan.tasks_for("e1")] == [
        ("A", pytest.approx(1.0)),
        ("B", pytest.approx(3.0)),
    ]


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
def test_quality_floor_sends_task_to_the_model_that_meets_it(scheduler):
    # NER floor 0.6: 'small' (0.3) may not take the NER task, 'big' (0.8) may; TC goes to 'small'.
    fleet = one_edge_fleet(floor=(0.5, 0.6, 0.0, 0.0, 0.0), cloud_latency_s=100.0)
    problem = OffloadingProblem(
        fleet,
        (TaskSpec("ner", NER, 10), TaskSpec("tc", TC, 10)),
        Placement({"e1": frozenset({"small", "big"})}),
    )
    models = {item.task_id: item.model_id for item in scheduler.offload(problem).assignments}
    assert models == {"ner": "big", "tc": "small"}


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
def test_task_goes_to_cloud_when_no_cached_model_meets_the_floor(scheduler):
    fleet = one_edge_fleet(floor=(0.0, 0.6, 0.0, 0.0, 0.0), cloud_latency_s=100.0)
    problem = OffloadingProblem(fleet, (TaskSpec("ner", NER, 1),), Placement({"e1": frozenset({"small"})}))
    assert scheduler.offload(problem).cloud_task_ids == ("ner",)


@pytest.mark.parametrize("seed", range(8))
def test_fast_offloading_matches_milp_optimum(seed):
    problem = random_offloading(num_edges=2 + seed % 4, num_tasks=10 + 5 * seed, num_models=4, seed=seed)
    exact, fast = ExactScheduler().offload(problem), FastScheduler().offload(problem)
    assert fast.total_latency_s == pytest.approx(exact.total_latency_s, rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_position_bound_never_cuts_off_the_optimum(seed):
    problem = random_offloading(num_edges=2, num_tasks=12, num_models=3, seed=100 + seed)
    full = solve_offloading_exact(problem, prune_positions=False)
    assert solve_offloading_exact(problem).total_latency_s == pytest.approx(full.total_latency_s, rel=1e-9)


def test_pruned_fast_offloading_stays_within_three_percent_and_beats_greedy():
    problem = random_offloading(num_edges=30, num_tasks=300, num_models=6, seed=5)
    exact = ExactScheduler().offload(problem)
    pruned = FastScheduler(offloading=FastConfig(max_arcs=0, edges_per_task=4)).offload(problem)
    arrays = fleet_arrays(problem.fleet)
    priced = task_arrays(problem, arrays)
    greedy_edges = greedy_loads(priced.cloud_s, arrays.edge_const_s, priced.processing_s)
    greedy_models = np.where(
        greedy_edges >= 0, priced.model_index[np.arange(greedy_edges.size), greedy_edges], -1
    )
    greedy = plan_from_slots(problem, arrays, greedy_edges, greedy_models, solver="greedy")
    assert exact.total_latency_s <= pruned.total_latency_s <= greedy.total_latency_s + 1e-9
    assert pruned.total_latency_s <= 1.03 * exact.total_latency_s


def test_plan_latencies_are_consistent_with_evaluate():
    problem = random_offloading(num_edges=5, num_tasks=60, num_models=5, seed=3)
    plan = FastScheduler().offload(problem)
    assert evaluate(problem, plan) == plan
    assert plan.total_latency_s == pytest.approx(sum(item.latency_s for item in plan.assignments))


def test_evaluate_rejects_a_model_the_edge_does_not_cache():
    problem = OffloadingProblem(
        one_edge_fleet(), (TaskSpec("A", TC, 10),), Placement({"e1": frozenset({"small"})})
    )
    plan = OffloadingPlan((TaskAssignment("A", "e1", "big", 0, 0.0),), 0.0, "hand")
    with pytest.raises(ProblemError, match="not cached"):
        evaluate(problem, plan)


def test_evaluate_rejects_a_plan_that_drops_a_task():
    problem = OffloadingProblem(one_edge_fleet(), (TaskSpec("A", TC, 10),), Placement({}))
    with pytest.raises(ProblemError, match="every task"):
        evaluate(problem, OffloadingPlan((), 0.0, "hand"))


def all_placements(fleet):
    """Every placement that fits each edge's memory."""
    per_edge = []
    for edge in fleet.edges:
        options = []
        for size in range(len(fleet.models) + 1):
            for subset in itertools.combinations(fleet.models, size):
                if sum(model.size_bytes for model in subset) <= edge.memory_bytes:
                    options.append(frozenset(model.model_id for model in subset))
        per_edge.append(options)
    for choice in itertools.product(*per_edge):
        yield Placement(dict(zip((edge.edge_id for edge in fleet.edges), choice, strict=True)))


@pytest.mark.parametrize("seed", range(3))
def test_caching_milp_matches_brute_force_over_all_placements(seed):
    problem = random_caching(num_edges=2, tasks_per_round=12, num_models=3, seed=seed)
    best = min(
        price_placement(problem, placement, "brute").objective_s
        for placement in all_placements(problem.fleet)
    )
    assert ExactScheduler().cache(problem).objective_s == pytest.approx(best, rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_fast_caching_within_three_percent_of_milp(seed):
    problem = random_caching(num_edges=6, tasks_per_round=60, num_models=6, seed=seed)
    exact, fast = ExactScheduler().cache(problem), FastScheduler().cache(problem)
    assert exact.objective_s <= fast.objective_s + 1e-6
    assert fast.objective_s <= 1.03 * exact.objective_s


def caching_problem(current, deploy_weight):
    fleet = one_edge_fleet(cloud_latency_s=4.0)
    demand = (TypeDemand(TC, 4, 10.0),)
    return CachingProblem(fleet, demand, Placement(current), horizon_rounds=20, deploy_weight=deploy_weight)


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
def test_caching_deploys_the_fast_model_when_demand_pays_for_it(scheduler):
    # 'small' serves the 4 TC tasks at 1 s each: 1+2+3 on the edge + 4 cloud = 10 s vs 16 s all-cloud,
    # saving 6 s x 20 rounds = 120 s against a 5 s deployment.
    plan = scheduler.cache(caching_problem({}, deploy_weight=1.0))
    assert ("e1", "small") in plan.deployments
    assert plan.round_latency_s == pytest.approx(10.0)
    assert plan.objective_s == pytest.approx(20 * 10.0 + plan.deploy_cost_s)


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
def test_caching_keeps_the_old_placement_when_deployment_costs_too_much(scheduler):
    # 'big' (3 s/task) gives 3 + 4 + 4 + 4 = 15 s a round; 'small' would give 10 s, saving
    # 5 s x 20 rounds = 100 s, but its 5 s deployment now counts 100x = 500 s, so nothing moves.
    plan = scheduler.cache(caching_problem({"e1": frozenset({"big"})}, deploy_weight=100.0))
    assert plan.deployments == ()
    assert plan.placement.models_on("e1") == frozenset({"big"})


def test_problem_refuses_a_placement_over_memory():
    fleet = one_edge_fleet()
    tight = Fleet(
        (dataclasses.replace(fleet.edges[0], memory_bytes=900),), fleet.models, fleet.quality, fleet.cloud
    )
    with pytest.raises(ProblemError, match="bytes over"):
        OffloadingProblem(tight, (), Placement({"e1": frozenset({"small", "big"})}))  # 400 + 600 > 900


def test_problem_refuses_duplicate_task_ids():
    with pytest.raises(ProblemError, match="duplicate task_id"):
        OffloadingProblem(one_edge_fleet(), (TaskSpec("A", TC, 1), TaskSpec("A", TC, 2)), Placement({}))


def test_unknown_scheduler_name_is_refused():
    assert make_scheduler("fast").name == "fast"
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("genetic")
