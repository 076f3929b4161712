"""Runs one dequeued task end to end: model from the cache, generation, result, CSV row."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from broker.messages import TaskResult, TaskSpec, TokenRecord
from edge_node.collab.agreement_budget import BudgetBook
from edge_node.collab.config import CollabConfig
from edge_node.collab.generation import CollabGeneration
from edge_node.collab.generation import generate as collab_generate
from edge_node.collab.link import CollabClient
from edge_node.collab.split_choice import SplitBook
from edge_node.metrics_csv import MetricsCsvWriter, TaskMetricsRow
from edge_node.model_cache import CacheError, ModelCache
from edge_node.query_routing import QueryRouting, RoutedOutcome
from edge_node.resources import ResourceSampler, ResourceSummary
from models.answers import parse_answer
from models.errors import ModelStoreError
from models.loaded import LoadedModel
from models.prompts import build_prompt
from models.runner import TaskOutcome, as_dict, encode_prompt, run_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CollabOutcome:
    """A task answered with the cloud's help (collaborative) or by a baseline mode."""

    answer: str
    parsed: dict[str, object]
    generation: CollabGeneration


@dataclass
class TaskExecutor:
    node_id: str
    cache: ModelCache[LoadedModel]
    csv: MetricsCsvWriter
    early_exit: bool = True
    collab_client: CollabClient | None = None  # set: tasks in collaborative / baseline modes may ask the cloud
    collab_config: CollabConfig = field(default_factory=CollabConfig)
    routing: QueryRouting | None = None  # set: tasks with route "cloud" / "auto" are routed (docs/routing.md)
    budgets: BudgetBook = field(default_factory=BudgetBook)  # collaborative agreement targets, per model
    splits: SplitBook = field(default_factory=SplitBook)  # speculative drafting splits, per model

    def expired(self, task: TaskSpec, queue_wait_s: float) -> TaskResult:
        result = self._failure(task, "expired", f"deadline passed after {queue_wait_s:.1f} s in the queue", queue_wait_s)
        self._log(result, None)
        return result

    def refused(self, task: TaskSpec, reason: str) -> TaskResult:
        result = self._failure(task, "refused", reason, 0.0)
        self._log(result, None)
        return result

    def run(self, task: TaskSpec, queue_wait_s: float) -> TaskResult:
        """Never raises for a task's own failure: it becomes an error result with the reason."""
        if task.deadline and time.time() > task.deadline:
            return self.expired(task, queue_wait_s)
        sampler = ResourceSampler(interval_s=0.5)
        sampler.start()
        load_started = time.perf_counter()
        load_time_s = 0.0
        try:
            with self.cache.use(task.model_id, keep_alive_s=task.keep_alive_s) as model:
                load_time_s = time.perf_counter() - load_started
                outcome = self._generate(model, task)
        except (CacheError, ModelStoreError) as error:
            result = self._failure(task, "error", str(error), queue_wait_s, load_time_s)
        except Exception as error:  # a bug or OOM in one task must not take the node down
            logger.exception("%s: task %s failed", self.node_id, task.task_id)
            result = self._failure(task, "error", f"{type(error).__name__}: {error}", queue_wait_s, load_time_s)
        else:
            result = self._success(task, outcome, queue_wait_s, load_time_s)
        self._log(result, sampler.stop())
        return result

    def _generate(self, model: LoadedModel, task: TaskSpec) -> TaskOutcome | CollabOutcome | RoutedOutcome:
        """Standalone: the edge alone with its exit heads. Other modes: CE-CoLLM with the cloud.

        A routed query (route "cloud" / "auto") is answered whole by the edge model alone or by the cloud.
        """
        if task.route in ("cloud", "auto") and self.routing is not None:
            policy = model.exit_policy if self.early_exit else None
            return self.routing.run(model, task.task_id, task.task_type, task.prompt, task.max_new_tokens, task.route,
                                    task.mining_mode, task.cloud_model_id,
                                    lambda: run_task(model, task.task_type, task.prompt, task.max_new_tokens, policy))
        # A depth-truncated edge variant ends in its own exit head: nothing for a cloud to continue.
        if task.mode == "standalone" or self.collab_client is None or model.manifest.variant == "edge":
            policy = model.exit_policy if self.early_exit else None
            return run_task(model, task.task_type, task.prompt, task.max_new_tokens, policy)
        prompt = build_prompt(task.task_type, task.prompt)
        config = _fit(dataclasses.replace(self.collab_config, mode=task.mode), model)
        generation = collab_generate(model, encode_prompt(model, prompt), min(task.max_new_tokens, prompt.max_new_tokens),
                                     config, self.collab_client,
                                     budget=self.budgets.for_answer(model.model_id, config.mode, config.threshold),
                                     splits=self.splits.for_answer(config, model))
        answer = model.decode(list(generation.token_ids)).strip()
        return CollabOutcome(answer, as_dict(parse_answer(task.task_type, answer, text=task.prompt)), generation)

    def _success(self, task: TaskSpec, outcome: TaskOutcome | CollabOutcome | RoutedOutcome, queue_wait_s: float,
                 load_time_s: float) -> TaskResult:
        tokens = tuple(TokenRecord(position=t.position, token_id=t.token_id, latency_ms=t.latency_ms,
                                   decided_by=t.decided_by, layer=t.layer, bytes_up=t.bytes_up, bytes_down=t.bytes_down)
                       for t in outcome.generation.tokens)
        generation = outcome.generation
        return TaskResult(
            task_id=task.task_id, node_id=self.node_id, status="ok", model_id=task.model_id, task_type=task.task_type,
            round_id=task.round_id, answer=outcome.answer, parsed=outcome.parsed, queue_wait_s=queue_wait_s,
            load_time_s=load_time_s, ttft_s=generation.ttft_s, total_s=generation.total_s,
            tokens=tokens, finished_at=time.time(),
            route=outcome.route if isinstance(outcome, RoutedOutcome) else ("edge" if task.route else ""),
            route_score=outcome.route_score if isinstance(outcome, RoutedOutcome) else 0.0,
            route_reason=outcome.route_reason if isinstance(outcome, RoutedOutcome) else "",
        )

    def _failure(self, task: TaskSpec, status: str, error: str, queue_wait_s: float, load_time_s: float = 0.0) -> TaskResult:
        return TaskResult(
            task_id=task.task_id, node_id=self.node_id, status=status, model_id=task.model_id,  # type: ignore[arg-type]
            task_type=task.task_type, round_id=task.round_id, error=error, queue_wait_s=queue_wait_s,
            load_time_s=load_time_s, finished_at=time.time(),
        )

    def _log(self, result: TaskResult, resources: ResourceSummary | None) -> None:
        exits = [t.layer for t in result.tokens if t.decided_by == "exit"]
        tokens = len(result.tokens)
        loaded = tuple(record.model_id for record in self.cache.status())
        try:
            self.csv.write(TaskMetricsRow(
                timestamp=datetime.now(UTC), task_id=result.task_id, task_type=result.task_type, model=result.model_id,
                status=result.status, error=result.error, queue_wait_s=result.queue_wait_s,
                load_time_s=result.load_time_s if result.status == "ok" else None,
                ttft_s=result.ttft_s if tokens else None, total_latency_s=result.total_s if tokens else None,
                tokens=tokens, tokens_per_s=tokens / result.total_s if tokens and result.total_s > 0 else None,
                mean_exit_layer=sum(exits) / len(exits) if exits else None,
                cpu_percent=resources.cpu_percent_mean if resources else None,
                memory_percent=resources.memory_percent_mean if resources else None,
                load_avg_1m=resources.load_avg_1m_mean if resources else None,
                loaded_models=loaded,
            ))
        except (OSError, ValueError) as error:  # the log is not worth losing the result over
            logger.warning("%s: could not write CSV row for %s: %s", self.node_id, result.task_id, error)


UNCALIBRATED_THRESHOLD = 0.9  # top-probability exit threshold for a model without a calibrated policy


def _fit(config: CollabConfig, model: LoadedModel) -> CollabConfig:
    """The split and exits this model allows: a shallower model splits in its middle, only exits it has
    heads for (at or below the split) are consulted, and a model without a calibrated exit policy
    exits on a plain top-probability threshold."""
    if model.exit_policy is None and config.threshold is None:
        config = dataclasses.replace(config, threshold=UNCALIBRATED_THRESHOLD, exit_thresholds=())
    split = config.split_layer if config.split_layer < model.num_layers else max(1, model.num_layers // 2)
    available = set(model.exit_heads.exit_layers) if model.exit_heads is not None else set()
    exits = tuple(layer for layer in config.exit_layers if layer <= split and layer in available)
    if exits == config.exit_layers and split == config.split_layer:
        return config
    if not exits:
        exits = tuple(sorted(layer for layer in available if layer <= split))
    thresholds = config.exit_thresholds if exits == config.exit_layers else ()
    return dataclasses.replace(config, split_layer=split, exit_layers=exits, exit_thresholds=thresholds)
