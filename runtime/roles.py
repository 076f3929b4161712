"""Running a role's service in the foreground until SIGINT/SIGTERM, then stopping it cleanly."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

from broker.errors import BusError
from runtime import sd_notify
from runtime.settings import ConfigError, load

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
    """Start `service`, block until a stop signal, stop it. Returns the process exit code.

    Under a systemd `Type=notify` unit it reports READY=1 once started, WATCHDOG=1 while the service's
    `alive()` (if it has one) holds, and STOPPING=1 (runtime/sd_notify.py); elsewhere that is a no-op.
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    service.start()
    sd_notify.notify("READY=1")
    watchdog_s = sd_notify.watchdog_interval_s()
    alive: Callable[[], bool] = getattr(service, "alive", lambda: True)
    try:
        while not stop.wait(min(1.0, watchdog_s or 1.0)):
            if watchdog_s and alive():  # a wedged node stops pinging: systemd restarts it
                sd_notify.notify("WATCHDOG=1")
    finally:
        logger.info("stopping")
        sd_notify.notify("STOPPING=1")
        service.stop()
    return 0


def settings_parser(prog: str, description: str | None, section: str) -> argparse.ArgumentParser:
    """The options every role's entry point takes: `--config FILE` and repeated `--set KEY=VALUE`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help=f"TOML file; settings under [{section}]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    return parser


def command_line_error(error: Exception) -> int:
    """Report a bad setting or an unreachable broker in one line; the exit code for it."""
    print(f"error: {error}", file=sys.stderr)  # noqa: T201 - command-line error
    return 2


def node_main(prog: str, description: str | None, section: str, config_type: type,
              make_service: Callable[[Any], Service], argv: list[str] | None = None) -> int:
    """Entry point shared by edge and cloud nodes: config file, `--node-id`, `--broker`, `--set`.

    Returns the exit code: 2 with one line naming the problem for a bad setting or an unreachable broker.
    """
    parser = settings_parser(prog, description, section)
    parser.add_argument("--node-id", help="this node's id (default from config)")
    parser.add_argument("--broker", help="broker host[:port], e.g. center.local:1883")
    args = parser.parse_args(argv)
    overrides = list(args.set)
    if args.node_id:
        overrides.append(f"node_id={args.node_id}")
    if args.broker:
        host, _, port = args.broker.partition(":")
        overrides += [f"bus.host={host}"] + ([f"bus.port={port}"] if port else [])
    try:
        config = load(config_type, args.config, overrides=overrides, section=section)
    except ConfigError as error:
        return command_line_error(error)
    configure_logging(config.node_id)
    try:
        return run_service(make_service(config))
    except BusError as error:
        return command_line_error(error)
