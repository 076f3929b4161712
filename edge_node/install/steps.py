"""Carrying out an edge install and its uninstall: files, venv, system user, systemd. Standard library only.

Every path written is recorded in `installed.json`; `uninstall` removes exactly those (and the
directories it created), so nothing is left behind and nothing else is touched. With a prefix other
than "/" (tests, image builds) the system steps (user, systemctl) are skipped and said so.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edge_node.install.plan import (
    EDGE_SOURCE,
    SERVICE_USER,
    UNIT_NAME,
    InstallOptions,
    Layout,
    edge_requirements,
    python_path,
    render_edge_toml,
    render_unit,
)

logger = logging.getLogger(__name__)


class InstallError(RuntimeError):
    """A step failed; the message names it. What was written so far is recorded for uninstall."""


@dataclass
class Record:
    """Paths this install created (files first, then directories deepest first on removal), user, unit."""

    files: list[str] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)
    user_created: bool = False
    unit_enabled: bool = False

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Record:
        return cls(**json.loads(path.read_text()))


@dataclass
class Secrets:
    password: str  # the node's broker password (from the center's enroll)
    ca_certificate: str = ""  # PEM of the fleet CA: the broker connection uses TLS
    client_certificate: str = ""  # PEM of this node's client certificate (brokers that require one)
    client_key: str = ""  # PEM of its private key
    center_public_key: str = ""  # PEM of the center's signing key: the edge checks signed model indexes


def install(layout: Layout, options: InstallOptions, source_dir: Path, edge_secrets: Secrets,
            create_venv: bool = True) -> Record:
    """Install the edge. Raises InstallError. With `create_venv` False, `options.python` must name an interpreter
    that already has the edge's packages."""
    system = layout.prefix == Path("/")
    if layout.record_file.exists():
        raise InstallError(f"an edge is already installed ({layout.record_file}); uninstall it first")
    record = Record()
    for directory in (layout.opt_dir, layout.etc_dir, layout.state_dir, layout.unit_file.parent):
        _make_dir(directory, record)
    try:
        _copy_source(source_dir, layout.app_dir, record)
        if create_venv:
            _create_venv(layout, options, source_dir, record)
        # Byte-compiled now: under ProtectSystem=strict the service cannot write __pycache__ next to the source.
        _run([python_path(layout, options), "-m", "compileall", "-q", str(layout.app_dir)])
        if system:
            record.user_created = _create_user(options.user, layout.state_dir)
        _write(layout.config_file, render_edge_toml(layout, options), record, 0o644)
        node = options.node_id
        _write(layout.etc_dir / f"{node}.password", edge_secrets.password + "\n", record, 0o640, options.user, system)
        _write(layout.etc_dir / f"{node}.http_token", secrets.token_hex(24) + "\n", record, 0o640, options.user, system)
        if edge_secrets.ca_certificate:
            _write(layout.etc_dir / "ca.crt", edge_secrets.ca_certificate, record, 0o644)
        if edge_secrets.client_certificate:
            _write(layout.etc_dir / f"{node}.crt", edge_secrets.client_certificate, record, 0o644)
            _write(layout.etc_dir / f"{node}.key", edge_secrets.client_key, record, 0o640, options.user, system)
        if edge_secrets.center_public_key:
            _write(layout.etc_dir / "center_signing.pub", edge_secrets.center_public_key, record, 0o644)
        for sub in ("models", "nodes"):
            _make_dir(layout.state_dir / sub, record)
        if system:
            shutil.chown(layout.state_dir, options.user, options.user)
            for sub in ("models", "nodes"):
                shutil.chown(layout.state_dir / sub, options.user, options.user)
        _write(layout.unit_file, render_unit(layout, options), record, 0o644)
        record.unit_enabled = _enable(layout, record, system)
    finally:
        record.save(layout.record_file)
    logger.info("installed edge %s under %s", options.node_id, layout.prefix)
    return record


def uninstall(layout: Layout) -> list[str]:
    """Stop and remove everything the install recorded; returns what was removed. Raises InstallError when
    there is no record of an install."""
    if not layout.record_file.is_file():
        raise InstallError(f"no edge install recorded at {layout.record_file}")
    record = Record.load(layout.record_file)
    system = layout.prefix == Path("/")
    if system and record.unit_enabled:
        _run(["systemctl", "disable", "--now", UNIT_NAME], check=False)
    removed = []
    for name in record.files:
        path = Path(name)
        if path.is_symlink() or path.exists():
            path.unlink()
            removed.append(name)
    for name in sorted(record.directories, key=lambda d: d.count("/"), reverse=True):
        path = Path(name)
        if path.is_dir():
            shutil.rmtree(path)  # what the edge wrote inside (models, logs) goes with it
            removed.append(name)
    if system:
        _run(["systemctl", "daemon-reload"], check=False)
        if record.user_created:
            _run(["userdel", SERVICE_USER], check=False)
    return removed


def _make_dir(path: Path, record: Record) -> None:
    """Create `path` and its missing parents, recording each one created (only those are removed later)."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    path.mkdir(parents=True, exist_ok=True)
    record.directories += [str(p) for p in missing]


def _write(path: Path, text: str, record: Record, mode: int, owner: str = "", chown: bool = False) -> None:
    path.write_text(text)
    os.chmod(path, mode)
    if chown and owner:
        shutil.chown(path, "root", owner)
    record.files.append(str(path))


def _copy_source(source_dir: Path, app_dir: Path, record: Record) -> None:
    for package in EDGE_SOURCE:
        if not (source_dir / package / "__init__.py").is_file():
            raise InstallError(f"{source_dir} has no package {package}: not an edgefleet source tree")
    _make_dir(app_dir, record)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.png", "tests")
    for package in EDGE_SOURCE:
        shutil.copytree(source_dir / package, app_dir / package, ignore=ignore, dirs_exist_ok=True)
    for name in ("requirements.txt", "docs/pi.md"):
        if (source_dir / name).is_file():
            (app_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source_dir / name, app_dir / name)


def _create_venv(layout: Layout, options: InstallOptions, source_dir: Path, record: Record) -> None:
    requirements, pip_options = edge_requirements((source_dir / "requirements.txt").read_text(), options.arch,
                                                  options.torch_index)
    _run([sys.executable, "-m", "venv", str(layout.venv_dir)])
    pip = [str(layout.venv_dir / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", "-q"]
    _run([*pip, *pip_options, *requirements])


def _create_user(user: str, home: Path) -> bool:
    if _run(["id", "-u", user], check=False).returncode == 0:
        return False
    _run(["useradd", "--system", "--home-dir", str(home), "--no-create-home", "--shell", "/usr/sbin/nologin", user])
    return True


def _enable(layout: Layout, record: Record, system: bool) -> bool:
    """Enable (and on a live system start) the unit; with a prefix, only the wants/ link systemctl would make."""
    if system and Path("/run/systemd/system").is_dir():
        _run(["systemctl", "daemon-reload"])
        _run(["systemctl", "enable", "--now", UNIT_NAME])
        return True
    _make_dir(layout.wants_link.parent, record)
    layout.wants_link.symlink_to(Path("..") / UNIT_NAME)
    record.files.append(str(layout.wants_link))
    return False


def _run(command: Iterable[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    command = list(command)
    logger.info("running %s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise InstallError(f"{' '.join(command[:4])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done
