"""The edge node process: wires the bus, the model cache, the task queue, the worker and the HTTP API."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from pathlib import Path

import torch

from broker import topics
from broker.client import Envelope
from broker.messages import LoadedModelStatus, ModelStatus, NodeCommand, TaskDispatch, TaskResult, TaskSpec
from broker.presence import NodePresence, NodeProbes
from edge_node.collab.agreement_budget import BudgetBook
from edge_node.collab.config import CollabConfig
from edge_node.collab.link import CollabClient
from edge_node.config import EdgeConfig
from edge_node.deployer import DeployConfig, ModelDeployer
from edge_node.executor import TaskExecutor
from edge_node.health import Health, HealthFacts, assess
from edge_node.http_api import HttpServer
from edge_node.metrics_csv import MetricsCsvWriter
from edge_node.model_cache import CacheConfig, ModelCache
from edge_node.query_routing import DEFAULT_MINER_DIR, QueryRouting
from edge_node.results import ResultBook
from edge_node.task_queue import QueueError, TaskQueue
from emulation.cpu_quota import CpuLimit, limit_cpu
from models.errors import UnknownModelError
from models.loaded import LoadedModel
from models.paths import default_store_root
from models.store import ModelStore
from runtime.threads import lower_thread_priority
from security.tokens import http_token

logger = logging.getLogger(__name__)
BUDGET_SAVE_EVERY_S = 60


class UnknownModel(LookupError):
    """The task names a model this node's store does not have (HTTP 404)."""


def torch_threads_for(configured: int, cpu_quota: float) -> int:
    """Threads to run torch with (0 = torch's default, all cores): the setting, else as many as a CPU quota allows.

    Under a quota of q cores, more than ceil(q) threads only take turns being throttled.
    """
    if configured:
        return configured
    return max(1, math.ceil(cpu_quota)) if cpu_quota > 0 else 0


class EdgeService:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.store = ModelStore(Path(config.model_store) if config.model_store else default_store_root())
        budget = config.memory_budget_mb * 2**20 or None
        self.cache: ModelCache[LoadedModel] = ModelCache(
            loader=self._load_model, size_of=LoadedModel.memory_bytes, clock=time.time,
            config=CacheConfig(default_keep_alive_s=config.keep_alive_s, max_loaded_models=config.max_loaded_models,
                               memory_budget_bytes=budget, wait_timeout_s=config.cache_wait_s),
            estimate_bytes=self._estimate_bytes,
        )
        self.queue: TaskQueue[TaskSpec] = TaskQueue(config.queue_capacity)
        self.results = ResultBook(config.results_kept)
        csv_path = Path(config.csv_path or Path(config.state_dir) / config.node_id / "llm_metrics.csv")
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        self.executor = TaskExecutor(config.node_id, self.cache, MetricsCsvWriter(csv_path), config.early_exit)
        token = http_token(config.http_host, config.http_token, config.http_token_file.replace("{node}", config.node_id))
        self.http = HttpServer(self, config.http_host, config.http_port, config.max_body_bytes, token)
        probes = NodeProbes(queue_depth=lambda: self.queue.depth, loaded_models=self.loaded_models,
                            models_in_store=lambda: tuple(self.store.list()), counters=self._counters)
        self.presence = NodePresence(config.node_id, "edge", config.bus, config.heartbeat_interval_s, probes,
                                     state_dir=Path(config.state_dir), http_url="")
        self.executor.collab_client = CollabClient(self.presence.bus, config.node_id)
        self.executor.collab_config = CollabConfig(split_layer=config.split_layer,
                                                   speculative_split_layer=config.speculative_split_layer,
                                                   speculative_split_auto=config.speculative_split_auto,
                                                   speculative_draft=config.speculative_draft,  # type: ignore[arg-type]
                                                   exit_layers=tuple(x for x in (10, 15, 20) if x <= config.split_layer),
                                                   cloud_deadline_s=config.cloud_deadline_s)
        self.executor.budgets = BudgetBook(config.collab_agreement_target or None,
                                           state_path=Path(config.state_dir) / config.node_id / "agreement_budgets.json")
        self.executor.routing = QueryRouting(
            config.node_id, self.executor.collab_client, config.router_cloud_model,
            Path(config.miner_dir) if config.miner_dir else DEFAULT_MINER_DIR,
            config.escalation_rule(),
            config.router_cloud_timeout_s)
        self.presence.command_handlers["unload_model"] = self._on_unload
        self.presence.command_handlers["deploy_model"] = self._on_deploy
        # Downloads (index + files over HTTP, resumable, sha256-checked) report through _on_deploy_status.
        self.deployer = ModelDeployer(config.node_id, self.store.root, self._on_deploy_status,
                                      DeployConfig(center_public_key_file=config.center_public_key_file))
        self._deploy_commands: dict[str, NodeCommand] = {}
        self.http_rejected = 0  # HTTP requests answered 4xx (bad body, unknown model or task, no token)
        self.cpu_limit = CpuLimit(0.0, "none", os.getpid())  # set by start() from config.cpu_quota
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work_loop, name="edge-worker", daemon=True),
                         threading.Thread(target=self._expiry_loop, name="edge-cache-expiry", daemon=True)]

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def start(self) -> EdgeService:
        # Before any model loads: the whole process runs under the emulated CPU (docs/emulation.md).
        self.cpu_limit = limit_cpu(self.config.cpu_quota, self.node_id)
        threads = torch_threads_for(self.config.torch_threads, self.config.cpu_quota)
        if threads:
            # OpenMP workers spin while they wait: on an oversubscribed host (several nodes, 2 cores)
            # two threads per node made a tiny model 10x slower than one.
            torch.set_num_threads(threads)
        self.http.start()
        self.presence.capabilities = dataclasses.replace(self.presence.capabilities, http_url=self.http.url)
        self.presence.bus.subscribe(topics.TASK_DISPATCH, self._on_dispatch, node=self.node_id)
        self.presence.start()
        for thread in self._threads:
            thread.start()
        logger.info("edge %s serving HTTP on %s; store %s", self.node_id, self.http.url, self.store.root)
        return self

    def alive(self) -> bool:
        """Whether the node still works (the systemd watchdog is fed only while it does): worker and HTTP up."""
        return self._threads[0].is_alive() and self.http.thread.is_alive() and not self._stop.is_set()

    def stop_worker(self) -> None:
        """Stop taking tasks (tests: together with presence.crash(), a node that died mid-task)."""
        self._stop.set()
        self.queue.close()

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()
        self.http.stop()
        self._finish_running_task()
        self.deployer.close()
        self.presence.stop()
        self.cache.unload_idle()
        self.executor.csv.close()
        self.executor.budgets.save()
        self.cpu_limit.release()

    def _finish_running_task(self) -> None:
        """Let the task in progress end and report while the bus is still up. Returning with the worker
        inside torch let the interpreter exit under it: a C++ abort ("terminate called without an active
        exception") instead of a clean stop."""
        worker = self._threads[0]
        if worker.is_alive() and threading.current_thread() is not worker:
            worker.join(self.config.stop_wait_s)
            if worker.is_alive():
                logger.warning("%s: the running task did not end within %.0f s of stop", self.node_id,
                               self.config.stop_wait_s)

    # ---- intake ----------------------------------------------------------------------------------

    def submit(self, task: TaskSpec) -> None:
        """Queue a task. Raises UnknownModel (no such model) or a QueueError (full, duplicate, closed)."""
        if not self.store.has(task.model_id):
            raise UnknownModel(f"model {task.model_id!r} is not in this node's store (have: {', '.join(self.store.list())})")
        ttl_s = max(0.0, task.deadline - time.time()) if task.deadline else None
        self.results.mark(task.task_id, "queued")
        try:
            self.queue.put(task.task_id, task, priority=task.priority, ttl_s=ttl_s)
        except QueueError:
            self.results.finish(self.executor.refused(task, "queue full"))
            raise

    def _on_dispatch(self, envelope: Envelope) -> None:
        dispatch = envelope.message
        assert isinstance(dispatch, TaskDispatch)
        for task in dispatch.tasks:
            try:
                self.submit(task)
            except (UnknownModel, QueueError) as error:
                logger.warning("%s: refused task %s of round %d: %s", self.node_id, task.task_id, dispatch.round_id, error)
                self._publish(self.executor.refused(task, str(error)))

    def _on_unload(self, command: NodeCommand) -> None:
        self.cache.unpin(command.model_id)
        self.cache.evict(command.model_id)
        self._status(command, "unloaded")

    def _on_deploy(self, command: NodeCommand) -> None:
        if command.url:  # fetch from the center's artifact server (a no-op if this version is installed)
            self._deploy_commands[command.command_id] = command
            self.deployer.handle(command)
            return
        # No URL: the model must already be in this node's store; make it resident. Loading takes
        # seconds, so off the bus's dispatcher thread.
        threading.Thread(target=self._make_resident, args=(command,), name=f"deploy-{command.model_id}",
                         daemon=True).start()

    def _on_deploy_status(self, status: ModelStatus) -> None:
        """The deployer's progress goes out as is, except `ready`: that waits until the model is loaded."""
        command = self._deploy_commands.get(status.command_id)
        if status.state != "ready" or command is None:
            self._publish_status(status)
            return
        self._deploy_commands.pop(status.command_id, None)
        self.cache.evict(command.model_id)  # a resident older version must not keep serving
        threading.Thread(target=self._make_resident, args=(command,), name=f"resident-{command.model_id}",
                         daemon=True).start()

    def _make_resident(self, command: NodeCommand) -> None:
        """Verify, load and (if asked) pin the model, then report ready; any failure is reported with its reason."""
        self._status(command, "verifying")
        try:
            if not self.store.has(command.model_id):
                raise UnknownModelError(f"model {command.model_id!r} is not in this node's store")
            manifest = self.store.verify(command.model_id)  # sha256 of every file: a tampered model is never loaded
            if self.config.model_variants and manifest.variant not in self.config.model_variants:
                raise UnknownModelError(f"variant {manifest.variant!r} of {command.model_id} is not accepted on this "
                                        f"board (model_variants: {', '.join(self.config.model_variants)})")
            with self.cache.use(command.model_id, keep_alive_s=-1 if command.pin else None):
                pass
            if command.pin:
                self.cache.pin(command.model_id)
        except Exception as error:
            logger.warning("%s: deploy of %s failed: %s", self.node_id, command.model_id, error)
            self._status(command, "failed", str(error) or type(error).__name__)
            return
        self._status(command, "ready", progress=1.0)
        self.presence.publish_birth()  # models in store / loaded changed

    def _status(self, command: NodeCommand, state: str, reason: str = "", progress: float = 0.0) -> None:
        self._publish_status(ModelStatus(
            node_id=self.node_id, model_id=command.model_id, state=state,  # type: ignore[arg-type]
            command_id=command.command_id, progress=progress, reason=reason, timestamp=time.time()))

    def _publish_status(self, status: ModelStatus) -> None:
        try:
            self.presence.bus.publish(topics.MODEL_STATUS, status, node=self.node_id)
        except Exception as error:
            logger.warning("%s: could not publish model status: %s", self.node_id, error)

    # ---- work ------------------------------------------------------------------------------------

    def _work_loop(self) -> None:
        lower_thread_priority()  # inference yields the CPU to uploads, heartbeats and acks
        while not self._stop.is_set():
            try:
                item = self.queue.get(timeout_s=0.5)
            except QueueError:
                return  # closed
            if item is None:
                continue
            task = item.task.payload
            if item.expired:
                result = self.executor.expired(task, item.queue_wait_s)
            else:
                self.results.mark(task.task_id, "running")
                result = self.executor.run(task, item.queue_wait_s)
            self.results.finish(result)
            self._publish(result)

    def _publish(self, result: TaskResult) -> None:
        try:
            self.presence.bus.publish(topics.TASK_RESULT, result, node=self.node_id)
        except Exception as error:  # the result stays available over HTTP
            logger.warning("%s: could not publish result of %s: %s", self.node_id, result.task_id, error)

    def _expiry_loop(self) -> None:
        ticks = 0
        while not self._stop.wait(1.0):
            for model_id in self.cache.expire_idle():
                logger.info("%s: unloaded idle model %s", self.node_id, model_id)
            ticks += 1
            if ticks % BUDGET_SAVE_EVERY_S == 0:  # a crash loses at most this much of what the budgets learnt
                self.executor.budgets.save()

    # ---- status ----------------------------------------------------------------------------------

    def loaded_models(self) -> tuple[LoadedModelStatus, ...]:
        return tuple(
            LoadedModelStatus(model_id=r.model_id, bytes=r.size_bytes, pinned=r.pinned, in_use=r.in_use,
                              expires_at=r.expires_at)
            for r in self.cache.status() if not r.loading
        )

    def health(self) -> tuple[Health, dict[str, object]]:
        """Whether the node can serve, and the figures behind the answer (for `/health`)."""
        stats = self.queue.stats()
        facts = HealthFacts(bus_connected=self.presence.bus.connected, worker_alive=self._threads[0].is_alive(),
                            stopping=self._stop.is_set(), queue_depth=stats.depth, queue_capacity=stats.capacity)
        speed = self.presence.speed
        return assess(facts), {
            "node_id": self.node_id, "bus_connected": facts.bus_connected, "worker_alive": facts.worker_alive,
            "center_online": self.presence.center_online.is_set(), "queue_depth": stats.depth,
            "queue_capacity": stats.capacity, "loaded_models": [m.model_id for m in self.loaded_models()],
            "malformed_messages": self.presence.bus.stats.counts["malformed"],
            "gflops": speed.gflops if speed is not None else self.presence.capabilities.gflops,
        }

    def _counters(self) -> dict[str, float]:
        stats = self.queue.stats()
        return {"queue_refused": float(stats.refused_full), "tasks_expired": float(stats.expired),
                "tasks_dequeued": float(stats.dequeued), "http_rejected": float(self.http_rejected),
                **self.executor.budgets.counters()}

    def _load_model(self, model_id: str) -> LoadedModel:
        model = self.store.load(model_id)
        self.cpu_limit.install_on_layers(model.model.model.layers)  # the fallback when no cgroup is writable
        return model

    def _estimate_bytes(self, model_id: str) -> int:
        try:
            return self.store.manifest(model_id).bytes
        except UnknownModelError as error:
            raise LookupError(str(error)) from None
