"""Run a node as if on a slower CPU: a cgroup v1 CPU quota, or per-layer delays where cgroups are closed.

`limit_cpu(quota, name)` creates `<cgroup_root>/edgefleet/<name>`, sets cfs_period_us/cfs_quota_us so
the process gets `quota` of one core (0.25 ~ a Raspberry Pi next to this machine), and moves the whole
process (all threads) into it. Where that is impossible (not root, cgroup v2 only, read-only) it logs
a WARNING and returns a limit whose `install_on_layers` adds the per-layer delay of
emulation/layer_delay.py to each model the node loads. `release()` moves the process back and removes
the cgroup; a leftover cgroup of the same name is reused.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulation.layer_delay import LayerDelay

logger = logging.getLogger(__name__)

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")  # cgroup v1 cpu hierarchy
CGROUP_PARENT = "edgefleet"
MIN_PERIOD_US = 10_000  # short periods throttle smoothly: a 25 % node runs 2.5 ms of every 10 ms
MIN_QUOTA_US = 1_000  # the kernel refuses smaller quotas
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")


def cfs_settings(quota: float) -> tuple[int, int]:
    """(cfs_period_us, cfs_quota_us) giving `quota` cores: the shortest period >= 10 ms whose quota is allowed."""
    assert quota > 0, f"quota {quota} must be > 0"
    period_us = max(MIN_PERIOD_US, math.ceil(MIN_QUOTA_US / quota))
    return period_us, max(MIN_QUOTA_US, round(quota * period_us))


def check_quota(quota: float) -> str:
    """Why `quota` (fraction of one core; 0 = unlimited) is invalid here, or '' if it is fine."""
    cores = os.cpu_count() or 1
    if quota != 0 and not 0 < quota <= cores:
        return f"{quota} must be 0 (unlimited) or a fraction of one core in (0, {cores}] (this host's cores)"
    return ""


@dataclass
class CpuLimit:
    """How a process's CPU quota is enforced, and how to undo it."""

    quota: float  # fraction of one core; 0 = unlimited
    mechanism: str  # "none", "cgroup" or "layer_delay"
    pid: int
    cgroup_dir: Path | None = None
    home_dir: Path | None = None  # the cgroup the process came from, to move it back on release
    delays: list[LayerDelay] = field(default_factory=list)

    def install_on_layers(self, layers: Any) -> None:
        """With the layer-delay fallback, slow `layers` (a model's decoder ModuleList); otherwise nothing."""
        if self.mechanism == "layer_delay":
            self.delays.append(LayerDelay(self.quota).install(layers))

    def release(self) -> None:
        """Move the process back where it came from and remove its cgroup; errors are logged, never raised."""
        for delay in self.delays:
            delay.remove()
        self.delays.clear()
        if self.cgroup_dir is None:
            return
        cgroup_dir, self.cgroup_dir = self.cgroup_dir, None
        if self.home_dir is not None and _alive(self.pid):
            try:
                (self.home_dir / "cgroup.procs").write_text(str(self.pid))
            except OSError as error:
                logger.warning("cpu quota: cannot move pid %d back to %s: %s", self.pid, self.home_dir, error)
        for directory in (cgroup_dir, cgroup_dir.parent):  # the parent goes once no node uses it
            try:
                directory.rmdir()
            except OSError as error:
                logger.debug("cpu quota: %s stays: %s", directory, error)
                return


def limit_cpu(quota: float, name: str, pid: int | None = None,
              cgroup_root: Path = DEFAULT_CGROUP_ROOT) -> CpuLimit:
    """Give process `pid` (default: this one) `quota` of one core. Raises ValueError for a bad quota or name.

    Returns a CpuLimit whose mechanism says what happened: "cgroup", "layer_delay" (cgroups not
    writable: call install_on_layers on each loaded model) or "none" (quota 0).
    """
    problem = check_quota(quota)
    if problem:
        raise ValueError(f"cpu quota {problem}")
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"cgroup name {name!r} must be 1-64 of letters, digits, '-', '_', '.'")
    pid = os.getpid() if pid is None else pid
    if quota == 0:
        return CpuLimit(0.0, "none", pid)
    cgroup_dir = cgroup_root / CGROUP_PARENT / name
    try:
        home_dir = _enter_cgroup(cgroup_root, cgroup_dir, quota, pid)
    except OSError as error:
        _remove_quietly(cgroup_dir)
        logger.warning("cpu quota %.3g for %s: cgroup %s is not usable (%s); falling back to a per-layer delay "
                       "after each decoder layer (an approximation, see docs/emulation.md)", quota, name, cgroup_dir,
                       error)
        return CpuLimit(quota, "layer_delay", pid)
    limit = CpuLimit(quota, "cgroup", pid, cgroup_dir, home_dir)
    if pid == os.getpid():
        atexit.register(limit.release)
        _stop_worker_polling()
    logger.info("cpu quota %.3g for %s: pid %d in cgroup %s", quota, name, pid, cgroup_dir)
    return limit


def _stop_worker_polling() -> None:
    """Under a quota the kernels' idle workers must sleep at once: polling for the next call spends the quota the
    process's own work needs (q4 decoding at 25 % of a core: 2.1 tokens/s polling, 4.0 sleeping; docs/lowbit.md)."""
    from models.lowbit import native

    native.set_worker_spin(0)


def _enter_cgroup(cgroup_root: Path, cgroup_dir: Path, quota: float, pid: int) -> Path:
    """Create and configure the cgroup and move pid into it; returns the pid's previous cgroup. Raises OSError."""
    if not (cgroup_root / "cpu.cfs_quota_us").is_file():
        raise FileNotFoundError(f"{cgroup_root} is not a cgroup v1 cpu hierarchy")
    home_dir = cgroup_root / _cpu_cgroup_path(pid).lstrip("/")
    cgroup_dir.mkdir(parents=True, exist_ok=True)  # a leftover of an earlier run is reused
    period_us, quota_us = cfs_settings(quota)
    (cgroup_dir / "cpu.cfs_quota_us").write_text("-1")  # a leftover's quota may not fit the new period
    (cgroup_dir / "cpu.cfs_period_us").write_text(str(period_us))
    (cgroup_dir / "cpu.cfs_quota_us").write_text(str(quota_us))
    (cgroup_dir / "cgroup.procs").write_text(str(pid))  # moves every thread of the process
    relative = "/" + str(cgroup_dir.relative_to(cgroup_root))
    if not _cpu_cgroup_path(pid).endswith(relative):
        raise PermissionError(f"pid {pid} is not in {relative} after joining it")
    return home_dir


def _cpu_cgroup_path(pid: int) -> str:
    """The pid's cgroup in the v1 cpu hierarchy, from /proc/<pid>/cgroup. Raises OSError if there is none."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    raise FileNotFoundError(f"pid {pid} has no cgroup v1 cpu controller")


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _remove_quietly(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass
