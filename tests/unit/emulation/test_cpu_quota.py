"""limit_cpu's decisions that need no cgroup: no quota means no change, bad input is refused."""

import os

import pytest

from emulation.cpu_quota import limit_cpu


def test_zero_quota_leaves_the_process_alone(tmp_path):
    limit = limit_cpu(0.0, "pi-01", cgroup_root=tmp_path)
    assert limit.mechanism == "none"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["..", "a/b", "", "x" * 65])
def test_names_that_are_not_one_directory_are_refused(name, tmp_path):
    with pytest.raises(ValueError, match="cgroup name"):
        limit_cpu(0.5, name, cgroup_root=tmp_path)


def test_quota_above_the_cores_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cpu quota"):
        limit_cpu((os.cpu_count() or 1) + 0.5, "pi-01", cgroup_root=tmp_path)
