"""The center process: membership, the round loop and its database."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from broker.capabilities import measure_gflops
from broker.settings import FLEET_DIR
from fleet_center.artifacts import ArtifactServer, ArtifactServerConfig
from fleet_center.center_db import CenterDb
from fleet_center.config import CenterConfig
from fleet_center.membership import FleetMembership
from fleet_center.profiles import load_profiles
from fleet_center.rounds import RoundRunner
from models.paths import default_store_root
from models.store import ModelStore

logger = logging.getLogger(__name__)


class CenterService:
    def __init__(self, config: CenterConfig) -> None:
        self.config = config
        self.membership = FleetMembership(config)
        self.stopped = threading.Event()
        self.db = CenterDb(Path(config.state_dir) / "center.sqlite")
        self.rounds: RoundRunner | None = None
        self._thread: threading.Thread | None = None
        self.artifacts: ArtifactServer | None = None
        if config.run_rounds:
            store = ModelStore(Path(config.rounds.model_store) if config.rounds.model_store else default_store_root())
            profiles = load_profiles(store, config.rounds.models, FLEET_DIR / "profiles" / "profiles.json")
            self.artifacts = ArtifactServer(store.root, ArtifactServerConfig(
                host=config.artifacts_host, port=config.artifacts_port, public_url=config.artifacts_public_url))
            self.rounds = RoundRunner(config.rounds, self.membership.bus, self.membership, self.db, profiles,
                                      reference_gflops=measure_gflops(), deploy_command=self.artifacts.deploy_command)
            self.rounds.attach()
            self._thread = threading.Thread(target=self._run_rounds, name="center-rounds", daemon=True)

    def start(self) -> CenterService:
        if self.artifacts is not None:
            self.artifacts.start()
            logger.info("model artifacts served at %s", self.artifacts.base_url)
        self.membership.start()
        if self._thread is not None:
            self._thread.start()
        return self

    def _run_rounds(self) -> None:
        assert self.rounds is not None
        try:
            self.rounds.run(self.stopped)
            logger.info("all %d rounds done", self.config.rounds.total_rounds)
        except Exception:
            logger.exception("round loop failed")

    def stop(self) -> None:
        self.stopped.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(10)
        self.membership.stop()
        if self.artifacts is not None:
            self.artifacts.stop()
        self.db.close()

    def run_forever(self) -> None:
        self.stopped.wait()
