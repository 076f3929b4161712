"""Broker credentials: per-node passwords derived from one fleet secret, in Mosquitto's own hash format."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

logger = logging.getLogger(__name__)

PBKDF2_ITERATIONS = 101  # Mosquitto 2.0's own default for `$7$` hashes


def load_or_create_secret(path: Path) -> bytes:
    """The fleet secret; created (32 random bytes, mode 600) on first use."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex())
    return secret


def node_password(secret: bytes, node_id: str) -> str:
    """A node's broker password: HMAC of its id, so an operator can provision one Pi at a time."""
    return hmac.new(secret, node_id.encode(), hashlib.sha256).hexdigest()


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """Password hash line body as `mosquitto_passwd` writes it (PBKDF2-SHA512, `$7$` format)."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def write_password_file(path: Path, passwords: dict[str, str]) -> None:
    """Write a Mosquitto password file for `user -> password`."""
    lines = [f"{user}:{mosquitto_hash(password)}" for user, password in sorted(passwords.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def write_node_password_files(directory: Path, passwords: dict[str, str]) -> None:
    """One `<node>.password` file per node, for nodes started on this host."""
    directory.mkdir(parents=True, exist_ok=True)
    for user, password in passwords.items():
        target = directory / f"{user}.password"
        target.write_text(password + "\n")
        target.chmod(0o600)
