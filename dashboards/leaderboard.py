"""The routing leaderboard's data for the dashboard: the CSV a benchmark job writes (benchmarks/job.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from runtime.settings import REPO_ROOT

logger = logging.getLogger(__name__)

DEFAULT_LEADERBOARD = REPO_ROOT / "docs" / "leaderboard.csv"
REQUIRED_COLUMNS = ("rank", "router", "mining_mode", "quality_ratio", "cloud_query_ratio", "pareto")


class LeaderboardError(ValueError):
    """The leaderboard file is missing or not a job's leaderboard."""


def leaderboard_path(configured: str) -> Path:
    return Path(configured) if configured else DEFAULT_LEADERBOARD


def load_leaderboard(path: Path) -> pd.DataFrame:
    """The ranked cells, with a `cell` label per row. Raises LeaderboardError naming the file and the problem."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise LeaderboardError(f"{path} does not exist: run `python -m benchmarks.job benchmarks/jobs/sample.toml`") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise LeaderboardError(f"{path}: {error}") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise LeaderboardError(f"{path}: not a job leaderboard (missing columns {missing})")
    table["pareto"] = table["pareto"].astype(str).str.lower() == "true"
    table["cell"] = table["router"] + " · " + table["mining_mode"].str.replace("_", " ")
    return table.sort_values("rank").reset_index(drop=True)


def pareto_line(table: pd.DataFrame) -> pd.DataFrame:
    """The Pareto front's cells in order of cloud share (the line drawn through them)."""
    return table[table["pareto"]].sort_values(["cloud_query_ratio", "quality_ratio"]).reset_index(drop=True)
