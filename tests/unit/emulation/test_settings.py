"""Emulation settings: bus.link_profile and the edge's cpu_quota are validated with errors naming the key."""

import argparse
import os

import pytest

from broker.config import BusConfig
from edge_node.config import EdgeConfig
from emulation.cpu_quota import cfs_settings
from local_fleet.launcher import _edge_emulation
from local_fleet.launcher import main as local_fleet_main
from runtime.settings import ConfigError, load


def test_link_profile_defaults_to_a_direct_lan():
    assert BusConfig().link_profile == "lan"


def test_link_profile_is_read_from_a_flag():
    assert load(EdgeConfig, env={}, overrides=["bus.link_profile=wan"]).bus.link_profile == "wan"


def test_unknown_link_profile_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match=r"bus\.link_profile: .*known: lan, wan, cellular"):
        load(EdgeConfig, env={}, overrides=["bus.link_profile=moon"])


def test_cpu_quota_accepts_a_fraction_of_a_core():
    assert load(EdgeConfig, env={}, overrides=["cpu_quota=0.25"]).cpu_quota == 0.25


@pytest.mark.parametrize("quota", ["-0.5", str((os.cpu_count() or 1) + 1), "nan"])
def test_cpu_quota_outside_the_cores_is_a_config_error(quota):
    with pytest.raises(ConfigError, match=r"^cpu_quota: "):
        load(EdgeConfig, env={}, overrides=[f"cpu_quota={quota}"])


@pytest.mark.parametrize("quota, period_us, quota_us", [(0.25, 10_000, 2_500), (1.0, 10_000, 10_000),
                                                         (0.05, 20_000, 1_000), (2.0, 10_000, 20_000)])
def test_cfs_settings_give_the_quota_with_a_short_allowed_period(quota, period_us, quota_us):
    assert cfs_settings(quota) == (period_us, quota_us)


@pytest.mark.parametrize("flag", ["edge_link=moon", "edge_cpu_quota=-1", "edge_cpu_quota=fast", "edges_link=wan"])
def test_local_fleet_refuses_a_bad_emulation_setting_before_starting_anything(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        local_fleet_main(["--set", flag])
    assert exit_info.value.code == 2
    assert flag.split("=")[0] in capsys.readouterr().err


def test_local_fleet_set_flags_become_the_edges_settings():
    args = argparse.Namespace(edge_link="lan", edge_cpu_quota=0.0, set=["edge_link=cellular", "edge_cpu_quota=0.25"])
    assert _edge_emulation(args) == ["--set", "bus.link_profile=cellular", "--set", "cpu_quota=0.25"]
