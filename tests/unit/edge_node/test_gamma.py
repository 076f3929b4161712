"""Adaptive gamma: the expected-tokens formula and the choice of gamma from measured figures."""

import pytest

from edge_node.collab.gamma import GammaInputs, GammaTracker, best_gamma, expected_tokens, round_ms


def test_expected_tokens_is_the_geometric_prefix_sum():
    assert expected_tokens(0.5, 1) == 1.0
    assert expected_tokens(0.5, 3) == pytest.approx(1 + 0.5 + 0.25)
    assert expected_tokens(1.0, 7) == 7.0
    assert expected_tokens(0.0, 5) == 1.0


def test_round_time_grows_by_one_draft_step_and_one_position_per_draft():
    inputs = GammaInputs(0.8, edge_step_ms=10.0, rtt_ms=50.0, cloud_fixed_ms=5.0, cloud_position_ms=1.0)
    assert round_ms(inputs, 4) - round_ms(inputs, 3) == pytest.approx(11.0)
    assert round_ms(inputs, 1) == pytest.approx(66.0)


def test_long_round_trips_want_longer_drafts():
    lan = GammaInputs(0.85, edge_step_ms=20.0, rtt_ms=1.0, cloud_fixed_ms=10.0)
    wan = GammaInputs(0.85, edge_step_ms=20.0, rtt_ms=50.0, cloud_fixed_ms=10.0)
    assert best_gamma(wan, 16) > best_gamma(lan, 16)


def test_poor_acceptance_wants_shorter_drafts():
    good = GammaInputs(0.9, edge_step_ms=20.0, rtt_ms=50.0)
    poor = GammaInputs(0.3, edge_step_ms=20.0, rtt_ms=50.0)
    assert best_gamma(poor, 16) < best_gamma(good, 16)


def test_certain_acceptance_drafts_the_maximum_and_no_acceptance_the_minimum():
    assert best_gamma(GammaInputs(1.0, edge_step_ms=20.0, rtt_ms=50.0), 9) == 9
    assert best_gamma(GammaInputs(0.0, edge_step_ms=20.0, rtt_ms=50.0), 9) == 1


def test_best_gamma_maximises_tokens_per_second_over_the_range():
    inputs = GammaInputs(0.8, edge_step_ms=15.0, rtt_ms=60.0, cloud_fixed_ms=8.0)
    rates = {g: expected_tokens(0.8, g) / round_ms(inputs, g) for g in range(1, 13)}
    assert best_gamma(inputs, 12) == max(rates, key=rates.get)


def test_tracker_lowers_gamma_after_rejections_and_raises_it_after_acceptances():
    tracker = GammaTracker(12, gamma_initial=4)
    for _ in range(10):
        low = tracker.observe(tracker.gamma, 0, edge_ms=20.0 * tracker.gamma, round_trip_ms=60.0, cloud_ms=10.0)
    assert low <= 2 and tracker.acceptance < 0.2
    for _ in range(20):
        high = tracker.observe(tracker.gamma, tracker.gamma, edge_ms=20.0 * tracker.gamma, round_trip_ms=60.0, cloud_ms=10.0)
    assert high > low and tracker.acceptance > 0.8


def test_tracker_separates_network_time_from_cloud_time():
    tracker = GammaTracker(8)
    tracker.observe(4, 2, edge_ms=40.0, round_trip_ms=70.0, cloud_ms=20.0)
    assert tracker.rtt_ms == pytest.approx(50.0) and tracker.cloud_ms == pytest.approx(20.0)
    assert tracker.edge_step_ms == pytest.approx(10.0)


def test_an_unsure_last_draft_does_not_count_against_acceptance():
    counted = GammaTracker(12, gamma_initial=4)
    for _ in range(10):  # 3 sure drafts accepted, the unsure 4th rejected, every round
        counted.observe(4, 3, edge_ms=80.0, round_trip_ms=60.0, cloud_ms=10.0, counted=3)
    assert counted.acceptance > 0.9 and counted.gamma >= 4


def test_a_round_ends_at_an_unsure_draft_unless_the_unsure_drafts_are_likely_together():
    import torch

    from edge_node.collab.speculative import _Draft, _round_ends

    def draft(sure, probability=1.0):
        return _Draft(1, torch.empty(0), sure, probability)

    assert not _round_ends([draft(True)], 1.0)
    assert _round_ends([draft(True), draft(False, 0.9)], 1.0)
    assert not _round_ends([draft(False, 0.9), draft(True), draft(False, 0.8)], 0.7)
    assert _round_ends([draft(False, 0.9), draft(True), draft(False, 0.7)], 0.7)
