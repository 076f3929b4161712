from __future__ import annotations

import pytest

from models.exits.corpus import SPLITS, corpus, split
from models.exits.corpus_train import train_only


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


def test_train_only_prompts_never_enter_calibration_or_held_out() -> None:
    extra = train_only()
    hashed = {p.text for p in corpus()}
    assert len(extra) >= 250 and {p.split for p in extra} == {"train"}
    assert len({p.task_type for p in extra}) == 5
    assert not {p.text for p in extra} & hashed
    assert len({p.text for p in extra}) == len(extra)
