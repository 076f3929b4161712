"""Query routing in the center's rounds (`center.router`, `center.mining_mode`; docs/routing.md).

With a router other than "scheduler", the offloading scheduler steps aside: every task goes to the
edge it arrived at (the least busy online edge if that one is gone) and carries a route for the edge
to follow: "auto" for the miner (the edge measures the query and decides, in the mining mode), "edge"
or "cloud" for routers the center decides itself (edge_only, cloud_only, random, resource from the
edges' heartbeats). The oracle needs the answers' scores in hindsight, so rounds refuse it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routing.routers import (
    CLOUD_ONLY,
    EDGE_ONLY,
    MINING_MODES,
    EdgeState,
    RandomRouter,
    ResourceRouter,
    Router,
    RoutingQuery,
)
from runtime.settings import check

logger = logging.getLogger(__name__)

ROUND_ROUTERS = ("scheduler", "edge_only", "cloud_only", "random", "resource", "miner")


@dataclass(frozen=True)
class RoundRouting:
    router: str = "scheduler"  # scheduler (no routing: the offloading scheduler places tasks) or a router name
    mining_mode: str = "mining_then_inference"  # the miner's mode: mining_then_inference | inference_then_mining
    cloud_probability: float = 0.5  # the random router's share of cloud queries
    seed: int = 0  # the random router's seed (decisions are fixed per task instance)

    def __post_init__(self) -> None:
        check(self.router in ROUND_ROUTERS, "router", f"{self.router!r} is not one of {', '.join(ROUND_ROUTERS)}"
              + (" (the oracle needs hindsight: only benchmarks.job runs it)" if self.router == "oracle" else ""))
        check(self.mining_mode in MINING_MODES, "mining_mode", f"must be one of {', '.join(MINING_MODES)}")
        check(0.0 <= self.cloud_probability <= 1.0, "router_cloud_probability", "must be within 0..1")

    @property
    def active(self) -> bool:
        return self.router != "scheduler"


@dataclass(frozen=True, slots=True)
class RoutedTask:
    instance_id: str
    edge_id: str  # the edge that runs (or forwards) it
    route: str  # TaskSpec.route: auto | edge | cloud


def _center_router(routing: RoundRouting) -> Router | None:
    match routing.router:
        case "edge_only":
            return EDGE_ONLY
        case "cloud_only":
            return CLOUD_ONLY
        case "random":
            return RandomRouter(routing.cloud_probability, routing.seed)
        case "resource":
            return ResourceRouter()
    return None  # the miner decides on the edge


def route_tasks(routing: RoundRouting, tasks: Sequence[tuple[str, str, int]],
                edges: Mapping[str, EdgeState]) -> list[RoutedTask]:
    """(instance id, arrival edge, task type) -> where each goes and its route. Raises ValueError without edges."""
    if not edges:
        raise ValueError("no online edge to route tasks through")
    router = _center_router(routing)
    least_busy = min(sorted(edges), key=lambda edge: edges[edge].queue_depth)
    routed = []
    for instance_id, arrival_edge, task_type in tasks:
        edge = arrival_edge if arrival_edge in edges else least_busy
        if router is None:
            route = "auto"
        else:
            route = router.route(RoutingQuery(instance_id, task_type, edge_state=edges[edge])).route
        routed.append(RoutedTask(instance_id, edge, route))
    return routed
