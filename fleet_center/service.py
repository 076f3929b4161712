"""The center process: membership now; rounds, scheduling and deployment plug in here."""

from __future__ import annotations

import logging
import threading

from fleet_center.config import CenterConfig
from fleet_center.membership import FleetMembership

logger = logging.getLogger(__name__)


class CenterService:
    def __init__(self, config: CenterConfig) -> None:
        self.config = config
        self.membership = FleetMembership(config)
        self.stopped = threading.Event()

    def start(self) -> CenterService:
        self.membership.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.membership.stop()

    def run_forever(self) -> None:
        self.stopped.wait()
