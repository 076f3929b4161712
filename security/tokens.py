"""Bearer tokens for a node's HTTP API: required once the API listens beyond loopback."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from pathlib import Path

from security.files import write_private

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or 0.0.0.0: reachable from elsewhere


def http_token(host: str, token: str, token_file: str) -> str:
    """The token the API bound to `host` must require, or "" for none (loopback without a configured token).

    Beyond loopback without a configured token, one is read from `token_file`, created (mode 600) on first use.
    """
    if token or is_loopback(host):
        return token
    path = Path(token_file)
    if write_private(path, secrets.token_hex(24).encode()):
        logger.info("created HTTP API token %s", path)
    return path.read_text().strip()


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <token>` (constant-time comparison)."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())
