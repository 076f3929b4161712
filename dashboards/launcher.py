"""Runs the dashboard as a child process (`streamlit run dashboards/app.py`) and waits until it is healthy.

The local-fleet launcher starts it on port 8501; tests start it on a free port.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dashboards.config import DashboardConfig
from dashboards.sample_data import write_sample
from metrics.launcher import LocalInfluxDB, ServerConfig, free_port
from metrics.store import open_store
from runtime.processes import stop_process, wait_ready
from runtime.settings import check

logger = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "app.py"


class DashboardStartError(RuntimeError):
    """Streamlit exited at start or did not report healthy in time."""


@dataclass(frozen=True)
class DashboardServerConfig:
    """Where the dashboard listens."""

    address: str = "127.0.0.1"  # 0.0.0.0 to reach it from another machine
    port: int = 8501  # HTTP port
    start_timeout_s: float = 60.0  # Streamlit imports pandas and altair: a cold start on a Pi is slow

    def __post_init__(self) -> None:
        check(0 < self.port < 65536, "dashboard_server.port", f"{self.port} is not a TCP port")


@dataclass
class DashboardProcess:
    """`streamlit run` headless, with the dashboard's settings passed as EDGEFLEET_DASHBOARD_* variables."""

    server: DashboardServerConfig
    dashboard: DashboardConfig
    log_path: str | None = None  # Streamlit's output; None: inherit ours
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.server.address in ("0.0.0.0", "") else self.server.address
        return f"http://{host}:{self.server.port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in vars(self.dashboard).items():
            env[f"EDGEFLEET_DASHBOARD_{name.upper()}"] = str(value)
        return env

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.headless", "true",
            "--server.address", self.server.address,
            "--server.port", str(self.server.port),
            "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "viewer",  # operators get no "Deploy" button or developer menu
            "--server.fileWatcherType", "none",  # nobody edits the code of a running dashboard; saves a thread and inotify
        ]

    def start(self) -> DashboardProcess:
        """Start Streamlit and wait for /_stcore/health. Raises DashboardStartError."""
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 (the child keeps it)
        try:
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), stdout=log, stderr=log, start_new_session=True,
                cwd=APP.parent.parent,
            )
        finally:
            if log is not None:
                log.close()
        with httpx.Client(timeout=2.0) as http:
            wait_ready(self.process, lambda: _healthy(http, f"{self.url}/_stcore/health"), self.server.start_timeout_s,
                       f"streamlit at {self.url} (log: {self.log_path})", DashboardStartError, interval_s=0.2)
        logger.info("dashboard at %s", self.url)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`."""
        stop_process(self.process, timeout_s)

    def __enter__(self) -> DashboardProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _healthy(http: httpx.Client, url: str) -> bool:
    try:
        return http.get(url).status_code == 200
    except httpx.HTTPError:
        return False  # not listening yet


def serve(server: DashboardServerConfig, dashboard: DashboardConfig, demo: bool = False) -> None:
    """Run the dashboard until Ctrl-C or SIGTERM. With `demo`, first start a throwaway InfluxDB holding the
    synthetic fleet of `dashboards.sample_data` and point the dashboard at it. Raises DashboardStartError,
    ServerStartError, StoreError.
    """
    # SIGTERM must unwind like Ctrl-C: the children run in their own sessions and would outlive us.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="edgefleet-demo-") as scratch:
        influx = LocalInfluxDB(ServerConfig(port=free_port(), data_dir=scratch)).start() if demo else None
        try:
            if influx is not None:
                dashboard = dataclasses.replace(dashboard, backend="influx1", url=influx.url, db="demo")
                count = write_sample(open_store(dashboard.store_config()), time.time_ns())
                logger.info("demo: %d sample points in %s", count, influx.url)
            process = DashboardProcess(server, dashboard).start()
            try:
                assert process.process is not None
                process.process.wait()
            except KeyboardInterrupt:
                logger.info("stopping the dashboard")
            finally:
                process.stop()
        finally:
            if influx is not None:
                influx.stop()
