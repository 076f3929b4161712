"""The per-pass delay: a pass stretched to its CPU time / quota, the quota read from a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulation.pass_delay import PassDelay, write_quota


def test_pass_is_stretched_to_cpu_time_over_quota(tmp_path: Path) -> None:
    slept: list[float] = []
    write_quota(tmp_path / "q", 0.25)
    PassDelay(tmp_path / "q", sleep=slept.append)(0.010, 0.010)
    assert slept == [pytest.approx(0.030)]


def test_time_spent_waiting_for_the_cpu_is_not_multiplied(tmp_path: Path) -> None:
    slept: list[float] = []
    write_quota(tmp_path / "q", 0.5)
    PassDelay(tmp_path / "q", sleep=slept.append)(0.030, 0.010)  # 20 ms waited for the CPU
    assert slept == []


def test_a_new_quota_applies_to_the_next_pass(tmp_path: Path) -> None:
    slept: list[float] = []
    write_quota(tmp_path / "q", 1.0)
    delay = PassDelay(tmp_path / "q", sleep=slept.append)
    delay(0.01, 0.01)
    write_quota(tmp_path / "q", 0.5)
    delay(0.01, 0.01)
    assert slept == [pytest.approx(0.01)]


def test_unreadable_quota_file_keeps_full_speed(tmp_path: Path) -> None:
    slept: list[float] = []
    PassDelay(tmp_path / "missing", sleep=slept.append)(0.01, 0.01)
    assert slept == []
