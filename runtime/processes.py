"""Child processes the launchers start (Mosquitto, InfluxDB, Streamlit): readiness waits and stopping."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


def wait_ready(process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout_s: float, what: str,
               error: type[Exception], interval_s: float = 0.1) -> None:
    """Poll `ready()` until true. Raises `error` if the process exits first or `timeout_s` passes
    (the process is then killed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise error(f"{what} exited with code {process.returncode}")
        if ready():
            return
        time.sleep(interval_s)
    kill_process(process)
    raise error(f"{what} was not ready within {timeout_s:.0f} s")


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("pid %d ignored SIGTERM for %.0f s; killing it", process.pid, timeout_s)
        process.kill()
        process.wait()


def kill_process(process: subprocess.Popen[bytes] | None) -> None:
    """Abrupt stop, as a crash would be."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
