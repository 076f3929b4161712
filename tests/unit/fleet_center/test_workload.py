"""The shipped task set, the loader's validation and the per-round draw."""

import json
from collections import Counter

import numpy as np
import pytest

from fleet_center.workload import (
    NER,
    QA,
    TC,
    TS,
    TaskSetError,
    WorkloadConfig,
    expected_tokens,
    generate_round,
    load_tasks,
    recent_demand,
    type_mix,
)

GOOD_TC = {"task_id": 1, "task_type": 0, "task_token": "What a day!", "reference_enum": "happy"}
GOOD_NER = {
    "task_id": 2,
    "task_type": 1,
    "task_token": "Ana went home",
    "reference_enum": ["B-PER", "O", "O"],
}
GOOD_QA = {"task_id": 3, "task_type": 2, "task_token": "Context: x. Question: y?", "reference_value": "x"}


def write_lines(tmp_path, records):
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8"
    )
    return path


@pytest.fixture(scope="module")
def shipped():
    return load_tasks()


def test_shipped_set_has_sixty_items_of_every_type(shipped):
    counts = Counter(task.task_type for task in shipped)
    assert all(counts[task_type] >= 60 for task_type in range(5)), counts


def test_shipped_qa_answers_occur_in_their_context(shipped):
    for task in shipped:
        if task.task_type == QA:
            assert task.reference_value.lower() in task.task_token.lower(), task.task_id


def test_shipped_translation_sources_are_chinese(shipped):
    for task in shipped:
        if task.task_type == TS:
            assert any("\u4e00" <= char <= "\u9fff" for char in task.task_token), task.task_id


def test_valid_lines_load_with_their_references(tmp_path):
    tasks = load_tasks(write_lines(tmp_path, [GOOD_TC, GOOD_NER, GOOD_QA]))
    assert [task.reference for task in tasks] == ["happy", ("B-PER", "O", "O"), "x"]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({**GOOD_NER, "reference_enum": ["B-PER", "O"]}, "reference_enum"),  # 2 tags, 3 tokens
        ({**GOOD_NER, "reference_enum": ["B-PER", "O", "B-DATE"]}, "reference_enum"),
        ({**GOOD_NER, "reference_enum": ["B-PER", "I-LOC", "O"]}, "reference_enum"),  # I- after another type
        ({**GOOD_TC, "reference_enum": "bored"}, "reference_enum"),
        ({**GOOD_TC, "task_type": 7}, "task_type"),
        ({**GOOD_TC, "task_id": True}, "task_id"),
        ({**GOOD_TC, "task_token": "  "}, "task_token"),
        ({k: v for k, v in GOOD_QA.items() if k != "reference_value"}, "reference_value"),
        ({**GOOD_TC, "reference_value": "happy"}, "reference_value"),
        ({**GOOD_TC, "extra": 1}, "extra"),
    ],
)
def test_invalid_field_is_reported_with_line_and_field(tmp_path, bad, field):
    bad = {**bad, "task_id": bad["task_id"] if bad["task_id"] is True else 9}
    with pytest.raises(TaskSetError) as raised:
        load_tasks(write_lines(tmp_path, [GOOD_TC, bad]))
    assert (raised.value.line, raised.value.field) == (2, field)
    assert ":2: field" in str(raised.value)


def test_repeated_task_id_names_the_second_line(tmp_path):
    with pytest.raises(TaskSetError) as raised:
        load_tasks(write_lines(tmp_path, [GOOD_TC, GOOD_QA, {**GOOD_NER, "task_id": 1}]))
    assert (raised.value.line, raised.value.field) == (3, "task_id")
    assert "repeats line 1" in str(raised.value)


def test_broken_json_names_the_line(tmp_path):
    with pytest.raises(TaskSetError) as raised:
        load_tasks(write_lines(tmp_path, [GOOD_TC, "", '{"task_id": 5,']))
    assert raised.value.line == 3


def test_same_seed_draws_the_same_round(shipped):
    config = WorkloadConfig()
    first = generate_round(config, 4, ["e1", "e2"], shipped, np.random.default_rng(11))
    second = generate_round(config, 4, ["e1", "e2"], shipped, np.random.default_rng(11))
    assert first == second
    assert len({item.instance_id for item in first}) == len(first)


def test_fixed_arrivals_give_each_edge_exactly_that_many(shipped):
    config = WorkloadConfig(arrival="fixed", tasks_per_edge=3)
    drawn = generate_round(config, 0, ["a", "b", "c"], shipped, np.random.default_rng(0))
    assert Counter(item.edge_id for item in drawn) == {"a": 3, "b": 3, "c": 3}


def test_poisson_arrivals_average_to_the_mean(shipped):
    config = WorkloadConfig(arrival="poisson", tasks_per_edge=4.0)
    drawn = generate_round(config, 0, [f"e{i}" for i in range(500)], shipped, np.random.default_rng(1))
    assert len(drawn) / 500 == pytest.approx(4.0, abs=0.3)


def test_mix_schedule_switches_types_at_its_round(shipped):
    config = WorkloadConfig(
        arrival="fixed", tasks_per_edge=20, mix_schedule=((0, (1, 0, 0, 0, 0)), (5, (0, 1, 0, 0, 0)))
    )
    before = generate_round(config, 4, ["e"], shipped, np.random.default_rng(2))
    after = generate_round(config, 5, ["e"], shipped, np.random.default_rng(2))
    assert {item.task.task_type for item in before} == {TC}
    assert {item.task.task_type for item in after} == {NER}


def test_interpolated_mix_blends_linearly():
    config = WorkloadConfig(mix_schedule=((0, (1, 0, 0, 0, 0)), (10, (0, 0, 0, 0, 1))), interpolate=True)
    assert type_mix(config, 5) == pytest.approx([0.5, 0, 0, 0, 0.5])
    assert type_mix(config, 30) == pytest.approx([0, 0, 0, 0, 1])


def test_mix_wanting_a_type_the_set_lacks_is_refused(shipped):
    only_tc = [task for task in shipped if task.task_type == TC]
    with pytest.raises(ValueError, match="NER"):
        generate_round(WorkloadConfig(), 0, ["e"], only_tc, np.random.default_rng(0))


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="mix_schedule"):
        WorkloadConfig(mix_schedule=((1, (1, 1, 1, 1, 1)),))
    with pytest.raises(ValueError, match="arrival"):
        WorkloadConfig(arrival="burst")


def test_recent_demand_averages_counts_per_round(shipped):
    config = WorkloadConfig(arrival="fixed", tasks_per_edge=2, mix_schedule=((0, (0, 1, 0, 0, 0)),))
    rounds = [generate_round(config, r, ["a", "b"], shipped, np.random.default_rng(r)) for r in range(3)]
    demand = recent_demand(rounds)
    assert demand[NER].tasks_per_round == 4
    assert demand[TC].tasks_per_round == 0
    assert demand[NER].mean_tokens > 0


def test_expected_tokens_grow_with_answer_length(shipped):
    short = next(task for task in shipped if task.task_type == TC)
    summaries = [task for task in shipped if task.task_type == 4]
    assert expected_tokens(short) < min(expected_tokens(task) for task in summaries)
