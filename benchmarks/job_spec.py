"""A benchmark job file (TOML) and the matrix of cells it expands to.

    [job]            name, results / leaderboard paths, held-out tasks per type, tokens per answer
    [matrix]         router, mining_mode, edge_variant, collaboration, link: lists, crossed
    [fleet]          edges, edge_cpu_quota

Mining modes only change what the miner does; every other router decides before inference, so it
runs once per (edge variant, collaboration, link) with mining_mode "mining_then_inference". Cells are
ordered so that what a cell needs has run before it: edge-only and cloud-only (the oracle's hindsight
and every ratio's denominator), then the miner (random takes the miner's cloud share), then the rest.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from routing.routers import MINING_MODES, ROUTER_NAMES
from runtime.settings import REPO_ROOT, ConfigError

logger = logging.getLogger(__name__)

COLLABORATION_MODES = ("standalone", "collaborative", "speculative")
ROUTER_ORDER = ("cloud_only", "edge_only", "miner", "random", "oracle", "resource")


@dataclass(frozen=True, slots=True)
class Cell:
    router: str
    mining_mode: str
    edge_variant: str
    collaboration: str
    link: str

    @property
    def key(self) -> str:
        return "|".join((self.router, self.mining_mode, self.edge_variant, self.collaboration, self.link))

    @property
    def group(self) -> tuple[str, str, str]:
        """Cells compared with each other: the same edge model, collaboration mode and link."""
        return (self.edge_variant, self.collaboration, self.link)


@dataclass(frozen=True)
class JobSpec:
    name: str = "job"
    results: str = ".fleet/jobs/job/results.jsonl"  # one JSON line per finished cell (relative to the repo)
    leaderboard_csv: str = ".fleet/jobs/job/leaderboard.csv"
    leaderboard_md: str = ".fleet/jobs/job/leaderboard.md"
    heldout_per_type: int = 10  # held-out tasks per task type the job runs (0 = the whole held-out part)
    max_new_tokens: int = 48  # per answer, as the center asks
    cloud_model: str = "smollm2-135m"  # what the cloud answers routed queries with
    random_cloud_probability: float = 0.5  # the random router's p when no miner cell sets it
    random_seed: int = 0
    bootstrap_resamples: int = 5000
    task_timeout_s: float = 600.0  # one query, queue included
    edges: int = 2  # edge processes; queries are spread over them
    edge_cpu_quota: float = 0.0  # fraction of one core per edge; 0 = unlimited
    routers: tuple[str, ...] = ("cloud_only", "edge_only", "miner", "random", "oracle")
    mining_modes: tuple[str, ...] = ("mining_then_inference", "inference_then_mining")
    edge_variants: tuple[str, ...] = ("smollm2-135m-bf16",)
    collaborations: tuple[str, ...] = ("standalone",)
    links: tuple[str, ...] = ("lan",)
    path: Path = field(default=Path("job.toml"), compare=False)

    def resolve(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else REPO_ROOT / path

    def cells(self) -> list[Cell]:
        cells = []
        for link in self.links:
            for variant in self.edge_variants:
                for collaboration in self.collaborations:
                    for router in sorted(self.routers, key=ROUTER_ORDER.index):
                        modes = self.mining_modes if router == "miner" else ("mining_then_inference",)
                        cells += [Cell(router, mode, variant, collaboration, link) for mode in modes]
        return cells


def load_job(path: Path) -> JobSpec:
    """Read and check a job file. Raises ConfigError naming the key."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from None
    job, matrix, fleet = data.get("job", {}), data.get("matrix", {}), data.get("fleet", {})
    unknown = sorted(set(data) - {"job", "matrix", "fleet"})
    if unknown:
        raise ConfigError(f"{path}: unknown table [{unknown[0]}]")
    names = {"router": "routers", "mining_mode": "mining_modes", "edge_variant": "edge_variants",
             "collaboration": "collaborations", "link": "links"}
    values: dict[str, object] = {}
    for key, value in job.items():
        if key not in JobSpec.__dataclass_fields__ or key in names.values() or key == "path":
            raise ConfigError(f"{path}: job.{key}: unknown key")
        values[key] = value
    for key, value in matrix.items():
        if key not in names:
            raise ConfigError(f"{path}: matrix.{key}: unknown key (known: {', '.join(names)})")
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: matrix.{key}: expected a non-empty list of names")
        values[names[key]] = tuple(value)
    for key, value in fleet.items():
        if key not in ("edges", "edge_cpu_quota"):
            raise ConfigError(f"{path}: fleet.{key}: unknown key")
        values[key] = value
    spec = JobSpec(**values, path=Path(path))  # type: ignore[arg-type]
    _check(spec)
    return spec


def _check(spec: JobSpec) -> None:
    for router in spec.routers:
        if router not in ROUTER_NAMES:
            raise ConfigError(f"matrix.router: {router!r} is not one of {', '.join(ROUTER_NAMES)}")
    for mode in spec.mining_modes:
        if mode not in MINING_MODES:
            raise ConfigError(f"matrix.mining_mode: {mode!r} is not one of {', '.join(MINING_MODES)}")
    for mode in spec.collaborations:
        if mode not in COLLABORATION_MODES:
            raise ConfigError(f"matrix.collaboration: {mode!r} is not one of {', '.join(COLLABORATION_MODES)}")
    if "oracle" in spec.routers and not {"edge_only", "cloud_only"} <= set(spec.routers):
        raise ConfigError("matrix.router: the oracle needs the edge_only and cloud_only cells")
    if "cloud_only" not in spec.routers:
        raise ConfigError("matrix.router: cloud_only is every quality ratio's reference")
    if spec.edges < 1:
        raise ConfigError("fleet.edges: must be >= 1")
    if spec.heldout_per_type < 0 or spec.max_new_tokens < 1:
        raise ConfigError("job: heldout_per_type must be >= 0 and max_new_tokens >= 1")
