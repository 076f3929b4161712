"""systemd's readiness and watchdog protocol (sd_notify) without libsystemd: one datagram per state.

Under a `Type=notify` unit, systemd passes `NOTIFY_SOCKET` (a path, or `@name` in the abstract
namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`). A node sends `READY=1`
once it serves, `WATCHDOG=1` at least every half watchdog interval while it is healthy, and
`STOPPING=1` when it stops. Outside systemd every call is a no-op, so the same process runs in a
shell, under `make run`, or as a service.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

logger = logging.getLogger(__name__)


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; returns whether a notify socket took it. Never raises."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as error:  # systemd gone or socket unreadable: the node goes on serving
        logger.warning("sd_notify %s to %s failed: %s", state.split("=")[0], address.lstrip("\0"), error)
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """How often to send WATCHDOG=1 (half of WatchdogSec), or None when systemd watches no one here."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID", "0") or 0)
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2e6
