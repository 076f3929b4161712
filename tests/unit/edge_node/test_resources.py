"""Resource snapshots and the per-task sampler."""

from __future__ import annotations

import itertools
import threading

import pytest

from edge_node.resources import ResourceSampler, summarise
from runtime.resources import CpuMeter, ResourceSnapshot, take_snapshot


def snapshot(cpu_percent: float, memory_percent: float = 50.0, rss: int = 100) -> ResourceSnapshot:
    return ResourceSnapshot(
        taken_at=0.0,
        cpu_percent=cpu_percent,
        memory_used_bytes=50,
        memory_total_bytes=100,
        memory_percent=memory_percent,
        load_avg_1m=cpu_percent / 100,
        load_avg_5m=0.0,
        load_avg_15m=0.0,
        process_rss_bytes=rss,
    )


def test_snapshot_reports_plausible_machine_values() -> None:
    reading = take_snapshot(CpuMeter())
    assert 0.0 <= reading.cpu_percent <= 100.0
    assert 0 < reading.memory_used_bytes <= reading.memory_total_bytes
    assert 0.0 <= reading.memory_percent <= 100.0
    assert min(reading.load_avg_1m, reading.load_avg_5m, reading.load_avg_15m) >= 0.0
    assert reading.process_rss_bytes > 0


def test_cpu_meter_reads_a_percentage_between_reads() -> None:
    meter = CpuMeter()
    sum(range(200_000))  # a little work so some time passes
    assert 0.0 <= meter.read() <= 100.0


def test_summary_gives_mean_and_max() -> None:
    summary = summarise([snapshot(10.0, rss=100), snapshot(30.0, rss=300), snapshot(20.0, rss=200)])
    assert (summary.samples, summary.cpu_percent_mean, summary.cpu_percent_max) == (3, 20.0, 30.0)
    assert (summary.load_avg_1m_max, summary.process_rss_bytes_max) == (0.3, 300)


def test_summary_of_no_snapshots_is_refused() -> None:
    with pytest.raises(ValueError):
        summarise([])


def test_sampler_takes_a_final_sample_even_for_a_short_task() -> None:
    readings = itertools.count()
    with ResourceSampler(interval_s=60, sample=lambda: snapshot(float(next(readings)))) as sampler:
        pass
    assert (sampler.summary.samples, sampler.summary.last.cpu_percent) == (1, 0.0)


def test_sampler_samples_at_its_interval_while_the_task_runs() -> None:
    enough = threading.Event()
    taken = []

    def sample() -> ResourceSnapshot:
        taken.append(1)
        if len(taken) >= 3:
            enough.set()
        return snapshot(50.0)

    with ResourceSampler(interval_s=0.01, sample=sample) as sampler:
        assert enough.wait(5), "sampler thread took no background samples"
    assert sampler.summary.samples >= 3


def test_sampler_skips_a_failing_sample_and_keeps_going() -> None:
    calls = itertools.count()
    recovered = threading.Event()

    def sample() -> ResourceSnapshot:
        if next(calls) == 0:
            raise OSError("transient /proc read error")
        recovered.set()
        return snapshot(5.0)

    with ResourceSampler(interval_s=0.01, sample=sample) as sampler:
        assert recovered.wait(5)
    assert sampler.summary.samples >= 2


def test_sampler_with_real_readings_summarises_them() -> None:
    with ResourceSampler(interval_s=0.01) as sampler:
        sum(range(200_000))
    assert sampler.summary.samples >= 1
    assert 0.0 <= sampler.summary.cpu_percent_max <= 100.0


def test_summary_before_stop_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        _ = ResourceSampler().summary


def test_non_positive_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        ResourceSampler(interval_s=0)
