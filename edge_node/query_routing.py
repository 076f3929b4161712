"""Query routing on the edge: whole queries to the edge model or to the cloud (issue 17, docs/routing.md).

`route: "cloud"` forwards the query to a cloud worker (a GenerateRequest for the cloud's model);
`route: "auto"` lets the edge's hard-example miner decide, in one of two mining modes:
- mining_then_inference: the query's early-layer statistics (models/prompt_features.py) go to the
  miner before anything is generated; the cloud answers when P(hard) reaches the miner's threshold;
- inference_then_mining: the edge answers first; an answer that looks hard (low mean confidence,
  degenerate repetition, unparseable: routing/escalation.py) is asked again of the cloud.
A silent or refusing cloud never loses the query: the edge's own answer is returned, and the result
says why. The decisions themselves are the pure routers in `routing/`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_node.collab.link import CloudUnavailableError, CollabClient, LinkCounters
from models.answers import parse_answer
from models.decode_loop import Decoded, DecodedToken
from models.loaded import LoadedModel
from models.prompt_features import answer_confidence, prompt_statistics
from models.prompts import build_prompt, resolve_task_type
from models.runner import TaskOutcome, as_dict, encode_prompt
from routing.escalation import AnswerSignals, EscalationRule, answer_signals, escalation_file
from routing.features import QueryFeatures
from routing.miner import MinerFileError, MinerModel, miner_file
from routing.routers import MinerRouter, RouteDecision, RoutingQuery

logger = logging.getLogger(__name__)

DEFAULT_MINER_DIR = Path(__file__).resolve().parent.parent / "routing" / "data"


@dataclass(frozen=True, slots=True)
class RoutedOutcome:
    """An answer with where it came from; `generation` has the tokens and timings of the whole query."""

    answer: str
    parsed: dict[str, object]
    generation: Decoded
    route: str  # edge | cloud | escalated
    route_score: float
    route_reason: str


def edge_answer_signals(model: LoadedModel, task_type: str, prompt: str, edge: TaskOutcome) -> AnswerSignals:
    """What inference-then-mining reads of the edge's answer; the escalation rule is fitted on the same
    (benchmarks/router_data.py)."""
    resolved = resolve_task_type(task_type)
    confidence = answer_confidence(model, encode_prompt(model, build_prompt(task_type, prompt)),
                                   list(edge.generation.token_ids))
    return answer_signals(int(resolved) if resolved is not None else -1, edge.parsed, edge.answer, confidence)


@dataclass
class QueryRouting:
    node_id: str
    client: CollabClient | None
    cloud_model_id: str = "smollm2-135m"  # what the cloud answers routed queries with
    miner_dir: Path = DEFAULT_MINER_DIR  # miner-<edge model id>.json and escalation-<edge model id>.json files
    escalation: EscalationRule | None = None  # None: the rule fitted for the edge model, else EscalationRule()
    cloud_timeout_s: float = 120.0  # a routed query's whole answer from the cloud
    _miners: dict[str, MinerRouter | None] = field(default_factory=dict)
    _escalations: dict[str, EscalationRule] = field(default_factory=dict)

    def miner_for(self, model_id: str) -> MinerRouter | None:
        """The miner trained for this edge model, or None (logged once) if there is none or it is broken."""
        if model_id not in self._miners:
            path = miner_file(self.miner_dir, model_id)
            try:
                self._miners[model_id] = MinerRouter(MinerModel.load(path))
            except MinerFileError as error:
                logger.warning("%s: no usable miner for %s, routed queries stay on the edge: %s", self.node_id,
                               model_id, error)
                self._miners[model_id] = None
        return self._miners[model_id]

    def escalation_for(self, model_id: str) -> EscalationRule:
        """The configured rule; else the one fitted for this edge model; else the defaults (logged once)."""
        if self.escalation is not None:
            return self.escalation
        if model_id not in self._escalations:
            path = escalation_file(self.miner_dir, model_id)
            try:
                self._escalations[model_id] = EscalationRule.load(path)
            except (OSError, ValueError) as error:
                logger.info("%s: no fitted escalation rule for %s (%s): using the defaults", self.node_id, model_id,
                            error)
                self._escalations[model_id] = EscalationRule()
        return self._escalations[model_id]

    def run(self, model: LoadedModel, task_id: str, task_type: str, prompt: str, max_new_tokens: int, route: str,
            mining_mode: str, cloud_model_id: str, answer_on_edge: Callable[[], TaskOutcome]) -> RoutedOutcome:
        """Answer one routed query. Never raises for cloud trouble (the edge answers instead)."""
        cloud_model = cloud_model_id or self.cloud_model_id
        if route == "cloud":
            return self._cloud_or_edge(model, task_type, prompt, max_new_tokens, cloud_model, answer_on_edge,
                                       RouteDecision("cloud", 1.0, "routed to the cloud by the caller"))
        if mining_mode == "inference_then_mining":
            return self._inference_then_mining(model, task_type, prompt, max_new_tokens, cloud_model, answer_on_edge)
        decision = self.decide(model, task_id, task_type, prompt)
        if decision.route == "cloud":
            return self._cloud_or_edge(model, task_type, prompt, max_new_tokens, cloud_model, answer_on_edge, decision)
        return _from_edge(answer_on_edge(), decision, "edge")

    def decide(self, model: LoadedModel, task_id: str, task_type: str, prompt: str) -> RouteDecision:
        """Mining before inference: the miner on the query's early-layer statistics."""
        miner = self.miner_for(model.model_id)
        if miner is None:
            return RouteDecision("edge", 0.0, f"no miner for {model.model_id}")
        started = time.perf_counter()
        statistics = prompt_statistics(model, prompt)
        resolved = resolve_task_type(task_type)
        features = QueryFeatures(int(resolved) if resolved is not None else -1, statistics.scalars(),
                                 statistics.pooled_hidden)
        try:
            decision = miner.route(RoutingQuery(task_id, features.task_type, features))
        except MinerFileError as error:
            return RouteDecision("edge", 0.0, f"miner does not fit {model.model_id}: {error}")
        logger.debug("%s: %s routed to %s (%s, features in %.0f ms)", self.node_id, task_id, decision.route,
                     decision.reason, (time.perf_counter() - started) * 1e3)
        return decision

    def _inference_then_mining(self, model: LoadedModel, task_type: str, prompt: str, max_new_tokens: int,
                               cloud_model: str, answer_on_edge: Callable[[], TaskOutcome]) -> RoutedOutcome:
        edge = answer_on_edge()
        signals = edge_answer_signals(model, task_type, prompt, edge)
        hard, why = self.escalation_for(model.model_id).hard(signals)
        score = 1.0 - signals.mean_confidence if signals.mean_confidence is not None else 1.0
        if not hard:
            return _from_edge(edge, RouteDecision("edge", score, why), "edge")
        cloud = self._cloud(model, task_type, prompt, max_new_tokens, cloud_model)
        if isinstance(cloud, str):
            return _from_edge(edge, RouteDecision("edge", score, f"{why}; {cloud}"), "edge")
        answer, parsed, decoded = cloud
        # The user waited for the edge's answer and then the cloud's: both count in the latency.
        waited = edge.generation.total_s
        generation = Decoded(decoded.prompt_tokens, decoded.tokens, waited + decoded.ttft_s, waited + decoded.total_s)
        return RoutedOutcome(answer, parsed, generation, "escalated", score, why)

    def _cloud_or_edge(self, model: LoadedModel, task_type: str, prompt: str, max_new_tokens: int, cloud_model: str,
                       answer_on_edge: Callable[[], TaskOutcome], decision: RouteDecision) -> RoutedOutcome:
        cloud = self._cloud(model, task_type, prompt, max_new_tokens, cloud_model)
        if isinstance(cloud, str):
            return _from_edge(answer_on_edge(), RouteDecision("edge", decision.score, f"{decision.reason}; {cloud}"),
                              "edge")
        answer, parsed, decoded = cloud
        return RoutedOutcome(answer, parsed, decoded, "cloud", decision.score, decision.reason)

    def _cloud(self, model: LoadedModel, task_type: str, prompt: str, max_new_tokens: int,
               cloud_model: str) -> tuple[str, dict[str, object], Decoded] | str:
        """The cloud's whole answer (the edge's tokenizer builds the prompt), or why there is none."""
        if self.client is None:
            return "no cloud link"
        chat = build_prompt(task_type, prompt)
        prompt_ids = encode_prompt(model, chat)
        counters = LinkCounters()
        started = time.perf_counter()
        try:
            reply = self.client.generate_cloud_only(cloud_model, prompt_ids, min(max_new_tokens, chat.max_new_tokens),
                                                    timeout_s=self.cloud_timeout_s, counters=counters)
        except CloudUnavailableError as error:
            logger.warning("%s: routed query not answered by the cloud: %s", self.node_id, error)
            return f"cloud unavailable ({error})"
        elapsed_s = time.perf_counter() - started
        count = len(reply.token_ids)
        decode_s = max(0.0, (reply.total_ms - reply.first_token_ms) / 1e3)
        first_s = max(0.0, elapsed_s - decode_s)  # link + queue + prompt + first token, as the edge sees it
        tokens = tuple(
            DecodedToken(len(prompt_ids) + i, token, "cloud", 0,
                         1e3 * (first_s if i == 0 else decode_s / max(1, count - 1)),
                         counters.bytes_up if i == 0 else 0, counters.bytes_down if i == count - 1 else 0)
            for i, token in enumerate(reply.token_ids))
        answer = model.decode(list(reply.token_ids)).strip()
        parsed = as_dict(parse_answer(task_type, answer, text=prompt))
        return answer, parsed, Decoded(len(prompt_ids), tokens, first_s, elapsed_s)


def _from_edge(outcome: TaskOutcome, decision: RouteDecision, route: str) -> RoutedOutcome:
    return RoutedOutcome(outcome.answer, outcome.parsed, outcome.generation, route, decision.score, decision.reason)
