"""Routers behind one interface: each decides, per query, whether the edge or the cloud answers it.

A router is a pure decision object: `route(query) -> RouteDecision`, over plain data it is given (the
query's features, the edge's measured state, for the oracle the scores in hindsight). No clock, no
bus; randomness is seeded per query id, so a decision is the same wherever and whenever it is asked.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from routing.features import QueryFeatures
from routing.miner import MinerModel

logger = logging.getLogger(__name__)

Route = Literal["edge", "cloud"]
MiningMode = Literal["mining_then_inference", "inference_then_mining"]
MINING_MODES: tuple[MiningMode, ...] = ("mining_then_inference", "inference_then_mining")
ROUTER_NAMES = ("edge_only", "cloud_only", "random", "oracle", "resource", "miner")


@dataclass(frozen=True, slots=True)
class EdgeState:
    """What the edge's heartbeats say: its queue, its CPU and its link to the cloud."""

    queue_depth: int = 0  # tasks waiting on the edge
    cpu_percent: float = 0.0  # 0..100 of the node's cores
    link_rtt_ms: float = 0.0  # round trip to the broker (the emulated link profile's, or measured)
    link_up_mbit_s: float = 0.0  # uplink; 0 = unknown


@dataclass(frozen=True, slots=True)
class RoutingQuery:
    query_id: str  # task id: seeds the random router and keys the oracle
    task_type: int
    features: QueryFeatures | None = None  # the miner's inputs (measured on the edge)
    edge_state: EdgeState | None = None


@dataclass(frozen=True, slots=True)
class RouteDecision:
    route: Route
    score: float  # the router's number behind the decision (P(hard), the draw, the score gap), for the record
    reason: str


class Router(Protocol):
    name: str
    needs_features: bool  # True: the query's early-layer features must be measured first

    def route(self, query: RoutingQuery) -> RouteDecision: ...


@dataclass(frozen=True)
class FixedRouter:
    """Every query to one side: edge_only and cloud_only, the two ends of every comparison."""

    fixed: Route
    name: str
    needs_features: bool = False

    def route(self, query: RoutingQuery) -> RouteDecision:
        return RouteDecision(self.fixed, float(self.fixed == "cloud"), self.name.replace("_", " "))


EDGE_ONLY = FixedRouter("edge", "edge_only")
CLOUD_ONLY = FixedRouter("cloud", "cloud_only")


def uniform_draw(query_id: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, query id): the same draw on every node and every rerun."""
    digest = hashlib.sha256(f"{seed}:{query_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class RandomRouter:
    """Sends a query to the cloud with probability `cloud_probability`, independent of the query."""

    cloud_probability: float = 0.5
    seed: int = 0
    name: str = "random"
    needs_features: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.cloud_probability <= 1.0:
            raise ValueError(f"cloud_probability {self.cloud_probability} outside [0, 1]")

    def route(self, query: RoutingQuery) -> RouteDecision:
        draw = uniform_draw(query.query_id, self.seed)
        route: Route = "cloud" if draw < self.cloud_probability else "edge"
        return RouteDecision(route, draw, f"draw {draw:.3f} vs p {self.cloud_probability:.3f}")


@dataclass(frozen=True)
class OracleRouter:
    """Hindsight: the cloud exactly when the edge's answer scored lower. A reference, not deployable."""

    scores: Mapping[str, tuple[float, float]]  # query id -> (edge score, cloud score)
    name: str = "oracle"
    needs_features: bool = False

    def route(self, query: RoutingQuery) -> RouteDecision:
        """Raises KeyError for a query it has no scores for (the oracle only knows what was measured)."""
        edge, cloud = self.scores[query.query_id]
        gap = cloud - edge
        return RouteDecision("cloud" if gap > 1e-9 else "edge", gap, f"cloud - edge = {gap:+.3f}")


@dataclass(frozen=True)
class ResourceRouter:
    """From heartbeats: offload when the edge is busy, keep the query local when the link is poor."""

    max_queue_depth: int = 4  # tasks waiting on the edge beyond which new ones go to the cloud
    max_cpu_percent: float = 90.0  # edge CPU busier than this: the cloud
    max_link_rtt_ms: float = 200.0  # a link slower than this keeps the query on the edge
    name: str = "resource"
    needs_features: bool = False

    def route(self, query: RoutingQuery) -> RouteDecision:
        state = query.edge_state or EdgeState()
        if state.link_rtt_ms > self.max_link_rtt_ms:
            return RouteDecision("edge", state.link_rtt_ms, f"link round trip {state.link_rtt_ms:.0f} ms")
        if state.queue_depth > self.max_queue_depth:
            return RouteDecision("cloud", float(state.queue_depth), f"edge queue {state.queue_depth}")
        if state.cpu_percent > self.max_cpu_percent:
            return RouteDecision("cloud", state.cpu_percent, f"edge CPU {state.cpu_percent:.0f} %")
        return RouteDecision("edge", 0.0, "edge has room")


@dataclass(frozen=True)
class MinerRouter:
    """The learned hard-example miner: the cloud when P(hard | features) reaches its threshold."""

    model: MinerModel
    threshold: float | None = None  # None: the operating point stored with the model
    name: str = "miner"
    needs_features: bool = True

    def route(self, query: RoutingQuery) -> RouteDecision:
        """Raises ValueError if the query has no features."""
        if query.features is None:
            raise ValueError(f"query {query.query_id}: the miner needs the query's features")
        probability = float(self.model.probability_hard([query.features])[0])
        threshold = self.model.threshold if self.threshold is None else self.threshold
        route: Route = "cloud" if probability >= threshold else "edge"
        return RouteDecision(route, probability, f"P(hard) {probability:.3f} vs {threshold:.3f}")


def make_router(name: str, *, miner_path: Path | None = None, cloud_probability: float = 0.5, seed: int = 0,
                oracle_scores: Mapping[str, tuple[float, float]] | None = None) -> Router:
    """A router by name. Raises ValueError for an unknown name or a missing input, MinerFileError for a bad miner."""
    match name:
        case "edge_only":
            return EDGE_ONLY
        case "cloud_only":
            return CLOUD_ONLY
        case "random":
            return RandomRouter(cloud_probability, seed)
        case "oracle":
            if oracle_scores is None:
                raise ValueError("the oracle router needs the edge's and the cloud's scores")
            return OracleRouter(oracle_scores)
        case "resource":
            return ResourceRouter()
        case "miner":
            if miner_path is None:
                raise ValueError("the miner router needs a miner file")
            return MinerRouter(MinerModel.load(miner_path))
    raise ValueError(f"unknown router {name!r}; known: {', '.join(ROUTER_NAMES)}")


def cloud_share(decisions: list[RouteDecision]) -> float:
    return float(np.mean([d.route == "cloud" for d in decisions])) if decisions else 0.0
