"""Choosing a speculative edge's drafting split from what its answers measured."""

from __future__ import annotations

from types import SimpleNamespace

from edge_node.collab.config import CollabConfig, drafting_candidates
from edge_node.collab.split_choice import AnswerFigures, SplitBook, SplitChooser

# Near the session-13 figures on `wan` (docs/benchmarks.md): a shallow split yields fewer tokens a round, a
# deep one costs more a pass; 1.4 passes a round, a 100 ms round trip, the cloud 3 ms a layer.
SHALLOW, DEEP = 20, 28


def figures(split: int, pass_ms: float, tokens_per_round: float, rounds: int = 20) -> AnswerFigures:
    passes = round(1.4 * rounds)
    return AnswerFigures(split, rounds, round(tokens_per_round * rounds), passes, pass_ms * passes, 100.0 * rounds,
                         3.0 * (30 - split) * rounds)


def measured(chooser: SplitChooser, shallow_ms: float, deep_ms: float) -> SplitChooser:
    chooser.observe(figures(SHALLOW, shallow_ms, 1.25))
    chooser.observe(figures(DEEP, deep_ms, 1.5))
    return chooser


def test_every_candidate_is_tried_once_shallowest_first():
    chooser = SplitChooser((SHALLOW, 24, DEEP), 30)
    tried = []
    for _ in range(3):
        split = chooser.choose()
        tried.append(split)
        chooser.observe(figures(split, 10.0, 1.3))
    assert tried == [SHALLOW, 24, DEEP]


def test_a_slow_edge_drafts_shallow_and_a_fast_edge_deep():
    slow = measured(SplitChooser((SHALLOW, DEEP), 30), shallow_ms=140.0, deep_ms=230.0)  # a 0.25 quota
    fast = measured(SplitChooser((SHALLOW, DEEP), 30), shallow_ms=8.0, deep_ms=12.0)
    assert slow.choose() == SHALLOW and fast.choose() == DEEP
    assert slow.rate(SHALLOW) > slow.rate(DEEP) and fast.rate(DEEP) > fast.rate(SHALLOW)


def test_an_edge_slowing_down_moves_the_splits_it_no_longer_measures():
    chooser = measured(SplitChooser((SHALLOW, DEEP), 30), shallow_ms=8.0, deep_ms=12.0)
    assert chooser.choose() == DEEP
    for _ in range(12):  # a quota arrives: the deep split's passes take 19 x longer
        chooser.observe(figures(DEEP, 230.0, 1.5))
    assert chooser.records[SHALLOW].pass_ms > 100.0  # the same factor, never measured again
    assert chooser.choose() == SHALLOW


def test_answers_without_rounds_or_at_other_splits_teach_nothing():
    chooser = SplitChooser((SHALLOW, DEEP), 30)
    chooser.observe(AnswerFigures(SHALLOW))
    chooser.observe(figures(26, 10.0, 1.3))
    assert chooser.records == {} and chooser.choose() == SHALLOW


def test_candidates_are_the_split_and_the_deeper_heads_inside_the_model():
    config = CollabConfig(split_layer=20)
    assert drafting_candidates(config, 30, (10, 15, 20, 24, 26, 28)) == (20, 24, 26, 28)
    assert drafting_candidates(config, 26, (10, 15, 20, 24, 26, 28)) == (20, 24)
    assert drafting_candidates(config, 30, (10, 15, 20)) == (20,)


def test_the_book_keeps_one_chooser_per_model_and_only_for_auto_speculative_answers():
    model = SimpleNamespace(model_id="m", num_layers=30, exit_heads=SimpleNamespace(exit_layers=(10, 15, 20, 28)))
    book = SplitBook()
    auto = CollabConfig(mode="speculative", speculative_split_auto=True)
    chooser = book.for_answer(auto, model)
    assert chooser is not None and chooser.candidates == (20, 28)
    assert book.for_answer(auto, model) is chooser
    assert book.for_answer(CollabConfig(mode="speculative"), model) is None  # a fixed split
    assert book.for_answer(CollabConfig(mode="collaborative", speculative_split_auto=True), model) is None
    shallow = SimpleNamespace(model_id="s", num_layers=30, exit_heads=SimpleNamespace(exit_layers=(10, 15, 20)))
    assert book.for_answer(auto, shallow) is None  # nothing deeper to choose
