"""The cloud node process: membership, whole tasks routed by the center, and the collaborative inference endpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from broker.presence import NodePresence, NodeProbes
from cloud_node.config import CloudConfig
from cloud_node.inference import CloudInference
from cloud_node.model_pool import ModelPool
from cloud_node.task_worker import CloudTaskWorker

logger = logging.getLogger(__name__)


class CloudService:
    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.models = ModelPool(config.model_store)
        self.inference: CloudInference | None = None
        probes = NodeProbes(
            queue_depth=lambda: self.tasks.queue_depth + (self.inference.queue_depth() if self.inference else 0),
            counters=lambda: self.inference.figures() if self.inference else {},
        )
        self.presence = NodePresence(
            config.node_id, "cloud", config.bus, heartbeat_interval_s=config.heartbeat_interval_s,
            state_dir=Path(config.state_dir), probes=probes,
        )
        self.tasks = CloudTaskWorker(config.node_id, self.presence.bus, self.models)

    def start(self) -> CloudService:
        if self.config.preload_model:
            self.models.get(self.config.preload_model)
        if self.config.serve_inference:
            # Subscribe before connecting: the subscriptions then go out with the connection, so a
            # request published right after start() returns is not lost to a subscription in flight.
            self.inference = CloudInference(self.config, self.presence.bus, self.models).start()
        self.tasks.attach()
        self.presence.start()
        logger.info("cloud %s started", self.config.node_id)
        return self

    def stop(self) -> None:
        if self.inference is not None:
            self.inference.stop()
        self.tasks.stop()
        self.presence.stop()
