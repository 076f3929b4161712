"""The benchmark job's pure parts: job files, the cell matrix, the results file, the report's ratios."""

import json

import pytest

from benchmarks.job_report import cell_rows, operating_point
from benchmarks.job_results import append_cell, first_by_key, read_results
from benchmarks.job_spec import Cell, JobSpec, load_job
from runtime.settings import ConfigError


def write_job(tmp_path, text: str):
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_sample_job_loads_and_orders_cells_by_what_they_need():
    spec = load_job("benchmarks/jobs/sample.toml")
    routers = [cell.router for cell in spec.cells()]
    assert routers.index("cloud_only") < routers.index("edge_only") < routers.index("miner") < routers.index("random")
    assert routers.index("edge_only") < routers.index("oracle")


def test_only_the_miner_runs_in_both_mining_modes():
    spec = JobSpec(routers=("cloud_only", "edge_only", "miner"))
    assert [(c.router, c.mining_mode) for c in spec.cells()] == [
        ("cloud_only", "mining_then_inference"), ("edge_only", "mining_then_inference"),
        ("miner", "mining_then_inference"), ("miner", "inference_then_mining")]


def test_job_file_with_an_unknown_router_names_it(tmp_path):
    with pytest.raises(ConfigError, match="fastest"):
        load_job(write_job(tmp_path, '[matrix]\nrouter = ["cloud_only", "fastest"]\n'))


def test_job_file_without_cloud_only_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cloud_only"):
        load_job(write_job(tmp_path, '[matrix]\nrouter = ["edge_only"]\n'))


def test_job_file_with_an_unknown_key_names_it(tmp_path):
    with pytest.raises(ConfigError, match="job.speed"):
        load_job(write_job(tmp_path, "[job]\nspeed = 3\n"))


def line(cell: Cell, scores: dict[int, float], cloud_share: float = 0.0) -> dict:
    records = [{"task_id": t, "task_type": 0, "score": s} for t, s in scores.items()]
    return {"key": cell.key, "records": records,
            "summary": {"quality": sum(scores.values()) / len(scores), "quality_by_type": {"TC": 0.5},
                        "cloud_query_ratio": cloud_share, "cloud_token_share": cloud_share, "ttft_s_p50": 0.1,
                        "latency_s_p50": 1.0, "latency_s_p95": 2.0, "tokens_per_s": 5.0, "bytes_per_response": 10.0,
                        "tasks": len(scores)}}


def test_a_line_cut_short_by_a_kill_is_skipped_and_the_next_cell_starts_a_new_line(tmp_path):
    path = tmp_path / "results.jsonl"
    append_cell(path, line(Cell("cloud_only", "mining_then_inference", "e", "standalone", "lan"), {1: 1.0}))
    with open(path, "a") as results:
        results.write('{"key": "edge_only|half')  # killed mid-write
    append_cell(path, line(Cell("edge_only", "mining_then_inference", "e", "standalone", "lan"), {1: 0.5}))
    assert [item["key"].split("|")[0] for item in read_results(path)] == ["cloud_only", "edge_only"]


def test_repeated_cells_keep_their_first_line(tmp_path):
    cell = Cell("cloud_only", "mining_then_inference", "e", "standalone", "lan")
    lines = [line(cell, {1: 1.0}), line(cell, {1: 0.0})]
    assert first_by_key(lines)[cell.key]["records"][0]["score"] == 1.0


def test_quality_ratio_is_against_cloud_only_on_the_same_tasks():
    spec = JobSpec(routers=("cloud_only", "edge_only"), edge_variants=("e",))
    cloud, edge = spec.cells()
    rows = cell_rows(spec.cells(), {cloud.key: line(cloud, {1: 1.0, 2: 0.5}), edge.key: line(edge, {1: 0.75, 2: 0.0})})
    ratios = {row["router"]: row["quality_ratio"] for row in rows}
    assert ratios == {"cloud_only": 1.0, "edge_only": 0.5}


def test_operating_point_compares_the_miner_with_random_over_the_same_tasks():
    spec = JobSpec(routers=("cloud_only", "miner", "random"), mining_modes=("mining_then_inference",),
                   edge_variants=("e",), bootstrap_resamples=500)
    cloud, miner, random = spec.cells()
    scores = {t: 1.0 for t in range(40)}
    lines = {cloud.key: line(cloud, scores), miner.key: line(miner, scores, 0.3),
             random.key: line(random, {t: float(t % 2) for t in range(40)}, 0.3)}
    point = operating_point(spec, lines)
    assert point["quality_ratio"] == 1.0 and point["random_quality_ratio"] == 0.5
    assert 0 < point["ci95_halfwidth"] < 0.5
    json.dumps(point)


def test_random_at_the_miners_share_sends_exactly_that_many_queries_to_the_cloud():
    from benchmarks.job_cells import exact_share_probability
    from routing.routers import RandomRouter, RoutingQuery

    task_ids = list(range(50))
    probability = exact_share_probability(task_ids, 0.36, seed=0)
    router = RandomRouter(probability, seed=0)
    routes = [router.route(RoutingQuery(str(t), 0)).route for t in task_ids]
    assert routes.count("cloud") == 18


def test_random_is_compared_by_its_expectation_when_edge_only_ran():
    spec = JobSpec(routers=("cloud_only", "edge_only", "miner", "random"), mining_modes=("mining_then_inference",),
                   edge_variants=("e",), bootstrap_resamples=500)
    cloud, edge, miner, random = spec.cells()
    tasks = range(40)
    cloud_scores = {t: 1.0 for t in tasks}
    edge_scores = {t: 0.0 if t < 10 else 1.0 for t in tasks}  # the edge fails the first 10
    miner_scores = {t: 1.0 for t in tasks}  # the miner sends exactly those 10 to the cloud
    drawn = {t: 0.0 if t in (0, 1, 2, 3, 4) else 1.0 for t in tasks}  # one draw of random at the same share
    lines = {cloud.key: line(cloud, cloud_scores), edge.key: line(edge, edge_scores, 0.0),
             miner.key: line(miner, miner_scores, 0.25), random.key: line(random, drawn, 0.25)}
    point = operating_point(spec, lines)
    # expected random at p = 0.25: the first 10 tasks score 0.25 each, the rest 1.0
    assert point["random_quality_ratio"] == round((10 * 0.25 + 30) / 40, 4)
    assert point["random_estimate"] == "expected over random's draws"
    assert point["random_draw_quality_ratio"] == 35 / 40
    assert point["miner_minus_random"] == round(1 - (10 * 0.25 + 30) / 40, 4)
    assert 0 < point["ci95_halfwidth"] < point["miner_minus_random"]


def test_cells_run_over_other_tasks_are_not_reused(tmp_path):
    from benchmarks.job import run_job

    spec = JobSpec(routers=("cloud_only", "edge_only"), edge_variants=("e",), heldout_per_type=2)
    results = tmp_path / "results.jsonl"
    append_cell(results, line(spec.cells()[0], {1: 1.0, 2: 0.5}))  # tasks 1 and 2: not this job's ten
    with pytest.raises(ValueError, match="other tasks"):
        run_job(spec, results, tmp_path / "work")
    assert len(read_results(results)) == 1  # nothing lost


def test_the_escalating_miner_is_compared_with_random_at_its_own_share():
    spec = JobSpec(routers=("cloud_only", "edge_only", "miner"),
                   mining_modes=("mining_then_inference", "inference_then_mining"), edge_variants=("e",),
                   bootstrap_resamples=500)
    cells = {(c.router, c.mining_mode): c for c in spec.cells()}
    tasks = range(40)
    edge_scores = {t: 0.0 if t < 10 else 1.0 for t in tasks}  # the edge fails the first 10 ...
    escalated = {t: 1.0 for t in tasks}  # ... and escalating exactly those fixes them: share 0.25
    lines = {cells[("cloud_only", "mining_then_inference")].key: line(cells[("cloud_only", "mining_then_inference")],
                                                                        dict.fromkeys(tasks, 1.0)),
             cells[("edge_only", "mining_then_inference")].key: line(cells[("edge_only", "mining_then_inference")],
                                                                       edge_scores),
             cells[("miner", "inference_then_mining")].key: line(cells[("miner", "inference_then_mining")], escalated, 0.25)}
    point = operating_point(spec, lines, "inference_then_mining")
    assert point["mining_mode"] == "inference_then_mining" and point["cloud_query_ratio"] == 0.25
    assert point["quality_ratio"] == 1.0 and point["random_quality_ratio"] == 0.8125  # 0.75 + 0.25 x 0.25
    assert "random_draw_quality_ratio" not in point  # the drawn random cell is at the other mode's share
    assert operating_point(spec, lines) == {}  # no mining-then-inference miner ran
