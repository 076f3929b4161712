"""Cloud cost accounting: CPU time per mode counted once, layer passes and tokens, per-token figures."""

import pytest

from cloud_node.cost import CostAccount, per_token


class FakeCpuClock:
    """A CPU clock the test advances (the real one is time.thread_time)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_time_of_a_nested_measure_is_counted_to_its_own_mode_only():
    clock = FakeCpuClock()
    account = CostAccount(clock)
    with account.measure("cloud_only"):
        clock.now += 1.0
        with account.measure("speculative"):
            clock.now += 0.25
        clock.now += 0.5
    figures = account.figures()
    assert figures["cost_cloud_only_cpu_ms"] == pytest.approx(1500.0)
    assert figures["cost_speculative_cpu_ms"] == pytest.approx(250.0)


def test_per_token_cost_divides_by_the_modes_tokens():
    clock = FakeCpuClock()
    account = CostAccount(clock)
    with account.measure("speculative"):
        clock.now += 0.08
    account.add("speculative", tokens=4, layer_passes=10, layer_rows=50)
    costs = per_token(account.figures(), "speculative")
    assert costs["cpu_ms_per_token"] == pytest.approx(20.0) and costs["layer_passes_per_token"] == pytest.approx(2.5)


def test_a_mode_without_tokens_has_no_per_token_cost():
    assert per_token(CostAccount().figures(), "collaborative") == {"cpu_ms_per_token": None, "layer_passes_per_token": None}


def test_a_forward_shared_by_two_modes_splits_its_time_by_their_rows():
    clock = FakeCpuClock()
    account = CostAccount(clock)
    with account.measure("cloud_only"):
        clock.now += 1.0
        with account.measure({"collaborative": 1, "speculative": 3}):
            clock.now += 0.4
    figures = account.figures()
    assert figures["cost_cloud_only_cpu_ms"] == pytest.approx(1000.0)
    assert figures["cost_collaborative_cpu_ms"] == pytest.approx(100.0)
    assert figures["cost_speculative_cpu_ms"] == pytest.approx(300.0)
