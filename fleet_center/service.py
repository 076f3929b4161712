"""The center process: membership, the round loop and its database."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

from broker.messages.membership import rejected_inputs
from fleet_center.artifacts import ArtifactServer, ArtifactServerConfig
from fleet_center.center_db import CenterDb
from fleet_center.config import CenterConfig
from fleet_center.membership import FleetMembership
from fleet_center.metrics_feed import MetricsFeed
from fleet_center.profiles import default_edge_model, load_profiles, measured_perplexity, profiles_path
from fleet_center.recorder import MetricRecorder
from fleet_center.round_routing import RoundRouting
from fleet_center.rounds import RoundRunner
from models.paths import default_store_root
from models.store import ModelStore
from runtime.capabilities import SpeedProbe

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
        self.recorder: MetricRecorder | None = None
        self.feed: MetricsFeed | None = None
        if config.record_metrics:
            metrics_config = config.metrics
            if not metrics_config.spool_dir:  # points buffered while InfluxDB is down survive a center crash
                metrics_config = replace(metrics_config, spool_dir=str(Path(config.state_dir) / "metrics-spool"))
            self.recorder = MetricRecorder(metrics_config)
            self.recorder.attach(self.membership.bus)  # nodes' own points arrive on metrics/+
            self.feed = MetricsFeed(self.recorder, self.db, self._role_of, self._rejected_inputs)
            self.membership.heartbeat_listeners.append(self.feed.heartbeat)
        if config.run_rounds:
            store = ModelStore(Path(config.rounds.model_store) if config.rounds.model_store else default_store_root())
            profiles = load_profiles(store, config.rounds.models, profiles_path())
            if not config.rounds.initial_model:
                initial = default_edge_model(profiles, measured_perplexity(profiles_path()), config.rounds.models[0])
                logger.info("edges start with %s (fastest within 2 %% of %s's perplexity)", initial,
                            config.rounds.models[0])
                config = self.config = replace(config, rounds=replace(config.rounds, initial_model=initial))
            self.artifacts = ArtifactServer(store.root, ArtifactServerConfig(
                host=config.artifacts_host, port=config.artifacts_port, public_url=config.artifacts_public_url))
            probe = SpeedProbe()
            probe.maybe_probe()
            self.rounds = RoundRunner(config.rounds, self.membership.bus, self.membership, self.db, profiles,
                                      reference_gflops=probe.gflops, deploy_command=self.artifacts.deploy_command,
                                      reference_probe=probe,
                                      routing=RoundRouting(config.router, config.mining_mode,
                                                           config.router_cloud_probability, config.rounds.seed))
            self.rounds.attach()
            if self.feed is not None:
                sizes = {p.model_id: p.size_bytes for p in profiles}
                self.rounds.listeners.append(self.feed.round_done)
                self.rounds.result_listeners.append(self.feed.result)
                self.rounds.status_listeners.append(lambda s: self.feed.model_status(s, sizes.get(s.model_id, 0)))
                self.feed.profiles(profiles, measured_perplexity(profiles_path()))
            self._thread = threading.Thread(target=self._run_rounds, name="center-rounds", daemon=True)

    def _rejected_inputs(self) -> int:
        return rejected_inputs({name: float(count) for name, count in self.membership.bus.stats.counts.items()})

    def _role_of(self, node_id: str) -> str:
        record = self.membership.snapshot().nodes.get(node_id)
        return record.role if record else "edge"

    def start(self) -> CenterService:
        if self.recorder is not None:
            self.recorder.start()
            self.feed.start()  # type: ignore[union-attr]
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
            if self.stopped.is_set():  # a stop, or total_rounds 0 (keep going) ending the only way it can
                logger.info("round loop stopped")
            else:
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
        if self.recorder is not None:
            self.feed.stop()  # type: ignore[union-attr]
            stats = self.recorder.stop()
            logger.info("metrics: %d points written, %d dropped", stats.written, stats.dropped)
        self.db.close()

    def run_forever(self) -> None:
        self.stopped.wait()
