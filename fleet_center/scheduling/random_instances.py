"""Seeded random fleets and rounds for solver tests and the scheduler benchmark.

The figures are Raspberry-Pi-like: models from 60 MB to 1.2 GB whose per-token time and quality
grow with size, edges 2-8x apart in speed with 1-4 GB for models, and a cloud that is better but
pays seconds of WAN and admission latency.
"""

from __future__ import annotations

import logging

import numpy as np

from fleet_center.scheduling.problem import (
    NUM_TASK_TYPES,
    CachingProblem,
    CloudOption,
    EdgeSpec,
    Fleet,
    ModelSpec,
    OffloadingProblem,
    Placement,
    TaskSpec,
    TypeDemand,
)

logger = logging.getLogger(__name__)

# Expected tokens per task type (low, high): TC and QA answers are short, summaries long.
TOKENS_BY_TYPE = ((4, 12), (12, 40), (6, 30), (15, 60), (25, 90))


def random_fleet(num_edges: int, num_models: int, rng: np.random.Generator) -> Fleet:
    """A fleet of `num_edges` edges and `num_models` model variants."""
    sizes = np.sort(rng.uniform(60e6, 1.2e9, num_models)).astype(np.int64)
    relative = sizes / sizes.max()
    models = tuple(ModelSpec(f"m{index}", int(size)) for index, size in enumerate(sizes))
    # Quality rises with size and differs per task type; the floor admits roughly the upper half.
    type_base = rng.uniform(0.35, 0.6, NUM_TASK_TYPES)
    quality = {
        model.model_id: tuple(
            float(np.clip(type_base[t] + 0.4 * relative[i] + rng.normal(0, 0.03), 0, 1))
            for t in range(NUM_TASK_TYPES)
        )
        for i, model in enumerate(models)
    }
    qualities = np.array(list(quality.values()))
    floor = tuple(float(np.quantile(qualities[:, t], rng.uniform(0.2, 0.6))) for t in range(NUM_TASK_TYPES))
    edges = []
    for index in range(num_edges):
        slowness = rng.uniform(1.0, 8.0)
        token_time = {
            m.model_id: float(slowness * (0.004 + 0.03 * relative[i])) for i, m in enumerate(models)
        }
        load_time = {m.model_id: float(m.size_bytes / 40e6 * rng.uniform(0.8, 1.5)) for m in models}
        edges.append(
            EdgeSpec(
                edge_id=f"e{index}",
                memory_bytes=int(rng.uniform(1e9, 4e9)),
                token_time_s=token_time,
                load_time_s=load_time,
                queue_delay_s=float(rng.exponential(0.5)),
                link_latency_s=float(rng.uniform(0.005, 0.05)),
            )
        )
    cloud = CloudOption(
        quality=(0.98,) * NUM_TASK_TYPES, token_time_s=0.03, latency_s=float(rng.uniform(3.0, 6.0))
    )
    return Fleet(edges=tuple(edges), models=models, quality=quality, cloud=cloud, quality_floor=floor)


def random_placement(fleet: Fleet, rng: np.random.Generator) -> Placement:
    """Each edge caches random models in random order while they fit its memory."""
    placement = {}
    for edge in fleet.edges:
        free, held = edge.memory_bytes, set()
        for index in rng.permutation(len(fleet.models)):
            model = fleet.models[index]
            if model.size_bytes <= free and rng.random() < 0.6:
                held.add(model.model_id)
                free -= model.size_bytes
        placement[edge.edge_id] = frozenset(held)
    return Placement(placement)


def random_tasks(num_tasks: int, rng: np.random.Generator) -> tuple[TaskSpec, ...]:
    types = rng.integers(0, NUM_TASK_TYPES, num_tasks)
    return tuple(
        TaskSpec(f"t{index}", int(task_type), int(rng.integers(*TOKENS_BY_TYPE[task_type], endpoint=True)))
        for index, task_type in enumerate(types)
    )


def random_offloading(num_edges: int, num_tasks: int, num_models: int, seed: int) -> OffloadingProblem:
    """A seeded random offloading round."""
    rng = np.random.default_rng(seed)
    fleet = random_fleet(num_edges, num_models, rng)
    return OffloadingProblem(
        fleet=fleet, tasks=random_tasks(num_tasks, rng), placement=random_placement(fleet, rng)
    )


def random_caching(num_edges: int, tasks_per_round: int, num_models: int, seed: int) -> CachingProblem:
    """A seeded random caching round with a skewed type mix."""
    rng = np.random.default_rng(seed)
    fleet = random_fleet(num_edges, num_models, rng)
    counts = rng.multinomial(tasks_per_round, rng.dirichlet(np.full(NUM_TASK_TYPES, 1.5)))
    demand = tuple(
        TypeDemand(t, int(counts[t]), float(np.mean(TOKENS_BY_TYPE[t]))) for t in range(NUM_TASK_TYPES)
    )
    return CachingProblem(fleet=fleet, demand=demand, current=random_placement(fleet, rng))
