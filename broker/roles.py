"""Running a role's service in the foreground until SIGINT/SIGTERM, then stopping it cleanly."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Protocol

logger = logging.getLogger(__name__)


class Service(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


def configure_logging(name: str, level: int = logging.INFO) -> None:
    """Log lines as `<time> <name> <logger> <level> <message>`; chatty client libraries only warn.

    `force`: some imported libraries configure the root logger at import time.
    """
    logging.basicConfig(level=level, format=f"%(asctime)s {name} %(name)s %(levelname)s %(message)s", force=True)
    for noisy in ("httpx", "httpcore", "urllib3", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_service(service: Service) -> int:
    """Start `service`, block until a stop signal, stop it. Returns the process exit code."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    service.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        logger.info("stopping")
        service.stop()
    return 0
