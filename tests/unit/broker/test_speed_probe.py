"""The repeated speed probe: its schedule and its best-of-recent figure (fake clock and fake probe)."""

from runtime.capabilities import EARLY_PROBES_S, SpeedProbe, host_id, probe_due


def test_probes_spread_over_the_first_minute_then_periodically():
    assert probe_due(0.0, 0, 0.0, 0.0, 300.0)
    assert not probe_due(0.0, 1, 0.0, 4.9, 300.0) and probe_due(0.0, 1, 0.0, 5.0, 300.0)
    assert probe_due(0.0, 4, 30.0, 60.0, 300.0)
    done = len(EARLY_PROBES_S)
    assert not probe_due(0.0, done, 60.0, 359.0, 300.0) and probe_due(0.0, done, 60.0, 360.0, 300.0)


def test_a_probe_slowed_by_a_busy_host_does_not_stick():
    now = [0.0]
    readings = iter([4.7, 150.0, 188.0, 120.0, 90.0, 95.0])
    probe = SpeedProbe(period_s=300.0, keep=6, measure=lambda: next(readings), clock=lambda: now[0])
    assert probe.maybe_probe() and probe.gflops == 4.7  # the start-up probe, while others load models
    for at in (1.0, 5.0, 15.0, 30.0, 60.0):
        now[0] = at
        probe.maybe_probe()
    assert probe.probes_done == 5 and probe.gflops == 188.0
    now[0] = 100.0
    assert not probe.maybe_probe()  # next one only after the period


def test_host_id_is_the_same_for_two_calls():
    assert host_id() and host_id() == host_id()
