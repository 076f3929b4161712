"""The Leaderboard page's data: the job's CSV, read back and checked."""

import pytest

from benchmarks.job_report import write_leaderboard
from dashboards.leaderboard import LeaderboardError, load_leaderboard, pareto_line

ROWS = [
    {"rank": 1, "router": "cloud_only", "mining_mode": "mining_then_inference", "edge_variant": "e", "collaboration":
     "standalone", "link": "lan", "quality": 0.5, "quality_ratio": 1.0, "cloud_query_ratio": 1.0, "pareto": True},
    {"rank": 2, "router": "miner", "mining_mode": "mining_then_inference", "edge_variant": "e", "collaboration":
     "standalone", "link": "lan", "quality": 0.48, "quality_ratio": 0.96, "cloud_query_ratio": 0.4, "pareto": True},
    {"rank": 3, "router": "random", "mining_mode": "mining_then_inference", "edge_variant": "e", "collaboration":
     "standalone", "link": "lan", "quality": 0.4, "quality_ratio": 0.8, "cloud_query_ratio": 0.4, "pareto": False},
]


def write(tmp_path):
    csv_path = tmp_path / "leaderboard.csv"
    write_leaderboard([{**row, **{k: "" for k in ("cloud_token_share", "ttft_s_p50", "latency_s_p50", "latency_s_p95",
                                                    "tokens_per_s", "bytes_per_response", "quality_TC", "quality_NER",
                                                    "quality_QA", "quality_TS", "quality_SG", "tasks")}}
                       for row in ROWS], csv_path, tmp_path / "leaderboard.md", "test", "test")
    return csv_path


def test_leaderboard_reads_back_ranked_with_the_pareto_flags(tmp_path):
    table = load_leaderboard(write(tmp_path))
    assert list(table["router"]) == ["cloud_only", "miner", "random"]
    assert list(table["pareto"]) == [True, True, False]


def test_pareto_line_runs_from_the_cheapest_cell(tmp_path):
    line = pareto_line(load_leaderboard(write(tmp_path)))
    assert list(line["router"]) == ["miner", "cloud_only"]


def test_markdown_leaderboard_marks_the_front(tmp_path):
    write(tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| 2 | miner |" in text and "**yes**" in text


def test_a_missing_leaderboard_says_how_to_make_one(tmp_path):
    with pytest.raises(LeaderboardError, match="benchmarks.job"):
        load_leaderboard(tmp_path / "none.csv")


def test_a_csv_that_is_not_a_leaderboard_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(LeaderboardError, match="missing columns"):
        load_leaderboard(path)
