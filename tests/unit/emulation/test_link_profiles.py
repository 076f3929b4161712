"""The link profiles and the pure departure schedule, with made-up times (no sockets, no clock)."""

import pytest

from emulation.link_profiles import PROFILES, Direction, get_profile, schedule_chunk
from runtime.settings import ConfigError

RATE = 1_000_000.0  # bytes per second: 1,000 bytes take 1 ms


def run(direction, chunks):
    """Departures of (arrival_s, size_bytes) chunks fed through the schedule in order."""
    line_free_s, departures = 0.0, []
    for arrival_s, size_bytes in chunks:
        departure = schedule_chunk(direction, arrival_s, size_bytes, line_free_s)
        line_free_s = departure.line_free_s
        departures.append(departure.departure_s)
    return departures


def test_delay_is_added_to_every_chunk_of_an_unlimited_link():
    assert run(Direction(delay_s=0.025), [(1.0, 100), (2.0, 10_000_000)]) == pytest.approx([1.025, 2.025])


def test_lone_small_chunk_pays_only_the_delay():
    assert run(Direction(0.025, RATE, burst_bytes=16_000), [(5.0, 1_000)]) == pytest.approx([5.025])


def test_long_run_leaves_at_the_rate():
    chunks = [(0.0, 10_000)] * 100  # 1 MB at once
    departures = run(Direction(0.0, RATE, burst_bytes=0), chunks)
    assert departures[-1] == pytest.approx(1.0)
    assert departures[1] - departures[0] == pytest.approx(0.010)


def test_burst_lets_the_first_bytes_leave_early_but_not_the_average():
    burst = run(Direction(0.0, RATE, burst_bytes=20_000), [(0.0, 10_000)] * 100)
    strict = run(Direction(0.0, RATE, burst_bytes=0), [(0.0, 10_000)] * 100)
    assert burst[:2] == pytest.approx([0.0, 0.0])  # within the bucket
    assert burst[-1] == pytest.approx(strict[-1] - 0.020)  # never more than burst/rate ahead


def test_departures_keep_the_order_of_arrivals():
    chunks = [(0.000, 50_000), (0.001, 10), (0.002, 30_000), (0.5, 5), (0.5001, 70_000)]
    departures = run(Direction(0.040, RATE), chunks)
    assert departures == sorted(departures)


def test_idle_line_forgets_earlier_traffic():
    departures = run(Direction(0.010, RATE, burst_bytes=0), [(0.0, 100_000), (10.0, 1_000)])
    assert departures == pytest.approx([0.110, 10.011])


def test_rate_and_delay_add_up_for_a_big_chunk():
    assert run(Direction(0.025, RATE, burst_bytes=0), [(0.0, 50_000)]) == pytest.approx([0.075])


def test_profiles_promise_the_documented_links():
    wan, cellular = PROFILES["wan"], PROFILES["cellular"]
    assert PROFILES["lan"].is_direct
    assert (wan.up.delay_s, wan.down.delay_s, wan.up.rate_mbit_s, wan.down.rate_mbit_s) == (0.025, 0.025, 20, 20)
    assert (cellular.up.delay_s, cellular.up.rate_mbit_s, cellular.down.rate_mbit_s) == (0.040, 5, 20)
    assert wan.rtt_s == pytest.approx(0.050)


def test_unknown_profile_names_the_key_and_the_known_ones():
    with pytest.raises(ConfigError, match=r"bus\.link_profile: unknown link profile 'dialup' \(known: lan, wan, cellular\)"):
        get_profile("dialup")


@pytest.mark.parametrize("changes", [{"delay_s": -0.001}, {"rate_bytes_per_s": -1.0}, {"burst_bytes": -1}])
def test_direction_refuses_negative_values(changes):
    with pytest.raises(ValueError):
        Direction(**changes)
