from __future__ import annotations

import pytest

from models.exit_corpus import SPLITS, corpus, split


def test_corpus_has_a_few_hundred_prompts_over_five_task_types() -> None:
    prompts = corpus()
    assert len(prompts) >= 250
    assert len({p.task_type for p in prompts}) == 5


def test_splits_are_disjoint_and_cover_the_corpus() -> None:
    texts = {name: {p.text for p in split(name)} for name in SPLITS}
    assert sum(len(t) for t in texts.values()) == len(corpus())
    assert not texts["train"] & texts["calibration"]
    assert not texts["train"] & texts["held_out"]
    assert not texts["calibration"] & texts["held_out"]


def test_every_split_sees_every_task_type() -> None:
    for name in SPLITS:
        assert len({p.task_type for p in split(name)}) == 5


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        split("test")
