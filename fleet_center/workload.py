"""The center's workload: the shipped task set, validated on load, and the per-round task draw.

A task line follows the original sample structure: `task_id`, `task_type` (0 TC, 1 NER, 2 QA,
3 TS zh->en, 4 SG), `task_token` (the query) and either `reference_enum` (TC label, or NER BIO tags
aligned with the whitespace tokens of the sentence) or `reference_value` (the ideal answer).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

import numpy as np

from fleet_center.scheduling.problem import NUM_TASK_TYPES, TaskSpec, TypeDemand

logger = logging.getLogger(__name__)

DEFAULT_TASKS_PATH = Path(__file__).resolve().parent / "data" / "tasks.jsonl"
TASK_TYPE_NAMES = ("TC", "NER", "QA", "TS", "SG")
TC, NER, QA, TS, SG = range(NUM_TASK_TYPES)
TC_LABELS = ("sad", "happy", "love", "angry", "scared", "surprise")  # index = the original enum value
NER_ENTITIES = ("PER", "LOC", "ORG", "MISC")
NER_TAGS = frozenset({"O"} | {f"{prefix}-{entity}" for prefix in "BI" for entity in NER_ENTITIES})


class TaskSetError(ValueError):
    """A task line is invalid; `line` is 1-based and `field` names the offending key."""

    def __init__(self, path: Path | str, line: int, field: str, problem: str) -> None:
        super().__init__(f"{path}:{line}: field {field!r}: {problem}")
        self.line = line
        self.field = field


@dataclass(frozen=True, slots=True)
class Task:
    task_id: int
    task_type: int  # 0 TC, 1 NER, 2 QA, 3 TS, 4 SG
    task_token: str  # the query; QA carries its context passage
    reference_enum: str | tuple[str, ...] | None = None  # TC label or NER tags
    reference_value: str | None = None  # QA, TS, SG ideal answer

    @property
    def reference(self) -> str | tuple[str, ...]:
        """The reference the evaluator scores against, whichever field holds it."""
        if self.reference_enum is not None:
            return self.reference_enum
        assert self.reference_value is not None, f"task {self.task_id} has no reference"
        return self.reference_value


def _check_ner_tags(reference: object, token: str, fail: Callable[[str, str], NoReturn]) -> tuple[str, ...]:
    if not isinstance(reference, list) or not all(isinstance(tag, str) for tag in reference):
        fail("reference_enum", "NER tags must be a list of strings")
    unknown = sorted(set(reference) - NER_TAGS)
    if unknown:
        fail("reference_enum", f"unknown tags {unknown}")
    num_tokens = len(token.split())
    if len(reference) != num_tokens:
        fail("reference_enum", f"{len(reference)} tags for {num_tokens} whitespace tokens")
    for position, (before, tag) in enumerate(zip(["O", *reference], reference, strict=False)):
        # An inside tag must continue an entity of the same type, or the spans are ambiguous.
        if tag.startswith("I-") and before[2:] != tag[2:]:
            fail("reference_enum", f"tag {position} {tag} does not continue an entity (after {before})")
    return tuple(reference)


def _check_reference(
    record: dict, task_type: int, fail: Callable[[str, str], NoReturn]
) -> tuple[str | tuple[str, ...] | None, str | None]:
    """(reference_enum, reference_value) of a record whose id, type and token are already valid."""
    expected = "reference_enum" if task_type in (TC, NER) else "reference_value"
    other = "reference_value" if expected == "reference_enum" else "reference_enum"
    if other in record:
        fail(other, f"not used by task type {TASK_TYPE_NAMES[task_type]} (expected {expected})")
    if expected not in record:
        fail(expected, "missing")
    reference = record[expected]
    if task_type == TC:
        if not isinstance(reference, str) or reference not in TC_LABELS:
            fail("reference_enum", f"{reference!r} is not one of {', '.join(TC_LABELS)}")
        return reference, None
    if task_type == NER:
        return _check_ner_tags(reference, record["task_token"], fail), None
    if not isinstance(reference, str) or not reference.strip():
        fail("reference_value", "must be a non-empty string")
    return None, reference


def parse_task(record: object, path: Path | str = "<record>", line: int = 0) -> Task:
    """Validate one decoded JSON line. Raises TaskSetError naming the line and field."""

    def fail(field: str, problem: str) -> NoReturn:
        raise TaskSetError(path, line, field, problem)

    if not isinstance(record, dict):
        fail("<line>", "must be a JSON object")
    for key in ("task_id", "task_type", "task_token"):
        if key not in record:
            fail(key, "missing")
    unknown = sorted(
        set(record) - {"task_id", "task_type", "task_token", "reference_enum", "reference_value"}
    )
    if unknown:
        fail(unknown[0], "unknown field")
    task_id, task_type, token = record["task_id"], record["task_type"], record["task_token"]
    # bool is an int subclass; a true/false id or type is a typo, not a value.
    if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
        fail("task_id", f"{task_id!r} is not a non-negative integer")
    if not isinstance(task_type, int) or isinstance(task_type, bool) or not 0 <= task_type < NUM_TASK_TYPES:
        fail("task_type", f"{task_type!r} is not one of 0..{NUM_TASK_TYPES - 1}")
    if not isinstance(token, str) or not token.strip():
        fail("task_token", "must be a non-empty string")
    reference_enum, reference_value = _check_reference(record, task_type, fail)
    return Task(task_id, task_type, token, reference_enum, reference_value)


def load_tasks(path: Path | str = DEFAULT_TASKS_PATH) -> tuple[Task, ...]:
    """Read and validate a JSONL task set.

    Raises TaskSetError (naming the 1-based line and the field) for malformed JSON, a bad field
    or a repeated task_id, and OSError if the file cannot be read.
    """
    tasks: list[Task] = []
    first_line: dict[int, int] = {}
    with open(path, encoding="utf-8") as lines:
        for line_number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise TaskSetError(path, line_number, "<line>", f"invalid JSON ({error.msg})") from error
            task = parse_task(record, path, line_number)
            if task.task_id in first_line:
                raise TaskSetError(
                    path, line_number, "task_id", f"{task.task_id} repeats line {first_line[task.task_id]}"
                )
            first_line[task.task_id] = line_number
            tasks.append(task)
    logger.info("loaded %d tasks from %s", len(tasks), path)
    return tuple(tasks)


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """How each round's tasks arrive."""

    arrival: Literal["fixed", "poisson"] = "poisson"  # per edge: exactly `tasks_per_edge`, or Poisson
    tasks_per_edge: float = 5.0  # the fixed count, or the Poisson mean, per edge per round
    # Type mix over rounds: (first round, weights over the 5 types). The mix in force at round r is
    # the last entry starting at or before r, or, with `interpolate`, a linear blend between the
    # neighbouring entries, so demand can drift and caching has something to follow.
    mix_schedule: tuple[tuple[int, tuple[float, ...]], ...] = ((0, (1.0,) * NUM_TASK_TYPES),)
    interpolate: bool = False

    def __post_init__(self) -> None:
        if self.arrival not in ("fixed", "poisson"):
            raise ValueError(f"arrival: {self.arrival!r} is not 'fixed' or 'poisson'")
        if self.tasks_per_edge < 0 or (
            self.arrival == "fixed" and self.tasks_per_edge != int(self.tasks_per_edge)
        ):
            raise ValueError("tasks_per_edge: must be >= 0, and whole for fixed arrivals")
        if not self.mix_schedule or self.mix_schedule[0][0] != 0:
            raise ValueError("mix_schedule: must start at round 0")
        starts = [start for start, _ in self.mix_schedule]
        if starts != sorted(set(starts)):
            raise ValueError("mix_schedule: rounds must strictly increase")
        for start, weights in self.mix_schedule:
            if len(weights) != NUM_TASK_TYPES or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(
                    f"mix_schedule[{start}]: need {NUM_TASK_TYPES} non-negative weights, not all 0"
                )


def type_mix(config: WorkloadConfig, round_index: int) -> np.ndarray:
    """Probabilities over the 5 task types in force at `round_index`."""
    starts = np.array([start for start, _ in config.mix_schedule])
    weights = np.array([mix for _, mix in config.mix_schedule], dtype=float)
    weights /= weights.sum(axis=1, keepdims=True)
    current = int(np.searchsorted(starts, round_index, side="right")) - 1
    if not config.interpolate or current + 1 >= len(starts):
        return weights[current]
    share = (round_index - starts[current]) / (starts[current + 1] - starts[current])
    return (1 - share) * weights[current] + share * weights[current + 1]


@dataclass(frozen=True, slots=True)
class RoundTask:
    """One task instance of a round: a task from the set arriving at an edge."""

    instance_id: str  # unique over the whole run: round, edge and arrival number
    edge_id: str  # where the task arrived
    task: Task


def generate_round(
    config: WorkloadConfig,
    round_index: int,
    edge_ids: Sequence[str],
    task_set: Sequence[Task],
    rng: np.random.Generator,
) -> tuple[RoundTask, ...]:
    """Draw one round's tasks for every edge, using only `rng` for randomness.

    Raises ValueError if the mix gives weight to a task type the set does not contain.
    """
    by_type = [
        [task for task in task_set if task.task_type == task_type] for task_type in range(NUM_TASK_TYPES)
    ]
    mix = type_mix(config, round_index)
    missing = [TASK_TYPE_NAMES[t] for t in range(NUM_TASK_TYPES) if mix[t] > 0 and not by_type[t]]
    if missing:
        raise ValueError(f"round {round_index}: the mix wants {missing} but the task set has none")
    drawn: list[RoundTask] = []
    for edge_id in edge_ids:
        count = (
            int(config.tasks_per_edge)
            if config.arrival == "fixed"
            else int(rng.poisson(config.tasks_per_edge))
        )
        for arrival, task_type in enumerate(rng.choice(NUM_TASK_TYPES, size=count, p=mix)):
            pool = by_type[task_type]
            drawn.append(
                RoundTask(f"r{round_index}-{edge_id}-{arrival}", edge_id, pool[rng.integers(len(pool))])
            )
    return tuple(drawn)


def expected_tokens(task: Task) -> int:
    """Tokens the scheduler should expect a task to cost: a rough prompt-plus-answer size.

    Prompt words and reference words are scaled by 1.3 tokens per word (English BPE average);
    Chinese characters count one token each. The reference is known to the center, so the answer
    length estimate is cheap and good enough for placement.
    """
    prompt = len(task.task_token.split()) if task.task_type != TS else len(task.task_token)
    if task.task_type == TC:
        answer = 2
    elif task.task_type == NER:
        answer = 3 * len(task.task_token.split())  # one tag per word, about three tokens each
    else:
        answer = len(str(task.reference_value).split())
    # Prompt tokens are processed in one batched forward pass, far cheaper per token than decoding.
    return max(1, round(0.1 * 1.3 * prompt + 1.3 * answer))


def to_task_spec(round_task: RoundTask) -> TaskSpec:
    """The scheduler's view of a round task."""
    return TaskSpec(round_task.instance_id, round_task.task.task_type, expected_tokens(round_task.task))


def recent_demand(rounds: Iterable[Sequence[RoundTask]]) -> tuple[TypeDemand, ...]:
    """Average tasks per round and mean expected tokens per task type over `rounds`.

    Raises ValueError if `rounds` is empty.
    """
    counts, tokens = np.zeros(NUM_TASK_TYPES), np.zeros(NUM_TASK_TYPES)
    num_rounds = 0
    for round_tasks in rounds:
        num_rounds += 1
        for item in round_tasks:
            counts[item.task.task_type] += 1
            tokens[item.task.task_type] += expected_tokens(item.task)
    if num_rounds == 0:
        raise ValueError("recent_demand needs at least one round")
    return tuple(
        TypeDemand(t, round(counts[t] / num_rounds), float(tokens[t] / counts[t]) if counts[t] else 1.0)
        for t in range(NUM_TASK_TYPES)
    )
