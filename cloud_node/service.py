"""The cloud node process: membership now; session contexts and generation plug in here."""

from __future__ import annotations

import logging
from pathlib import Path

from broker.presence import NodePresence
from cloud_node.config import CloudConfig

logger = logging.getLogger(__name__)


class CloudService:
    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        self.presence = NodePresence(
            config.node_id, "cloud", config.bus, heartbeat_interval_s=config.heartbeat_interval_s,
            state_dir=Path(config.state_dir),
        )

    def start(self) -> CloudService:
        self.presence.start()
        logger.info("cloud %s started; waiting for the center", self.config.node_id)
        return self

    def stop(self) -> None:
        self.presence.stop()
