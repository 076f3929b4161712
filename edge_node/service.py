"""The edge node process: membership now; model cache, task queue and HTTP API plug in here."""

from __future__ import annotations

import logging
from pathlib import Path

from broker.presence import NodePresence
from edge_node.config import EdgeConfig

logger = logging.getLogger(__name__)


class EdgeService:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.presence = NodePresence(
            config.node_id, "edge", config.bus, heartbeat_interval_s=config.heartbeat_interval_s,
            state_dir=Path(config.state_dir),
        )

    def start(self) -> EdgeService:
        self.presence.start()
        logger.info("edge %s started; waiting for the center", self.config.node_id)
        return self

    def stop(self) -> None:
        self.presence.stop()
