"""Paired bootstrap and the leaderboard's ranking and Pareto front."""

import numpy as np
import pytest

from routing.leaderboard import Entry, pareto_front, rank
from routing.splits import split_tasks, take_per_type
from routing.stats import paired_bootstrap


def test_paired_bootstrap_interval_shrinks_with_more_tasks():
    rng = np.random.default_rng(0)
    small = rng.normal(size=20)
    large = rng.normal(size=2000)
    assert paired_bootstrap(large, np.zeros(2000))[1] < paired_bootstrap(small, np.zeros(20))[1]


def test_paired_bootstrap_of_identical_samples_is_zero():
    assert paired_bootstrap([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]) == (0.0, 0.0)


def test_paired_bootstrap_refuses_unequal_samples():
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_pareto_front_drops_dominated_cells():
    entries = [Entry("cloud", 1.0, 1.0), Entry("edge", 0.6, 0.0), Entry("miner", 0.95, 0.4),
               Entry("random", 0.8, 0.4)]
    assert pareto_front(entries) == {"cloud", "edge", "miner"}


def test_rank_puts_better_quality_first_then_fewer_cloud_queries():
    entries = [Entry("a", 0.9, 0.5), Entry("b", 0.9, 0.2), Entry("c", 1.0, 1.0)]
    assert [e.name for e in rank(entries)] == ["c", "b", "a"]


def test_split_parts_are_disjoint_and_stratified():
    tasks = [(i, i % 5) for i in range(100)]
    split = split_tasks(tasks, heldout_share=0.3)
    assert not set(split.train) & set(split.heldout)
    assert len(split.train) + len(split.heldout) == 100
    assert {t % 5 for t in split.heldout} == set(range(5)) and len(split.heldout) == 30


def test_split_is_the_same_on_every_call():
    tasks = [(i, i % 3) for i in range(30)]
    assert split_tasks(tasks) == split_tasks(list(reversed(tasks)))


def test_take_per_type_keeps_the_first_of_each_type():
    assert take_per_type([1, 2, 3, 4, 5], {1: 0, 2: 0, 3: 1, 4: 0, 5: 1}, 1) == (1, 3)
