"""Configuration: TOML, then environment, then flags; bad values name their key."""

import pytest

from edge_node.config import EdgeConfig
from runtime.settings import ConfigError, load


def test_defaults_run_locally():
    config = load(EdgeConfig, env={})
    assert config.bus.host == "127.0.0.1"
    assert config.bus.port == 1883


def test_toml_then_environment_then_flags(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text('[edge]\nnode_id = "pi-07"\nheartbeat_interval_s = 3.0\n[edge.bus]\nhost = "center.lan"\nport = 1884\n')
    config = load(EdgeConfig, path, env={"EDGEFLEET_BUS_PORT": "1885"}, overrides=["heartbeat_interval_s=4"], section="edge")
    assert config.node_id == "pi-07"
    assert config.bus.host == "center.lan"
    assert config.bus.port == 1885  # environment beats the file
    assert config.heartbeat_interval_s == 4.0  # a flag beats both


def test_unrelated_environment_variables_are_ignored():
    config = load(EdgeConfig, env={"EDGEFLEET_HOME": "/x", "EDGEFLEET_CLOUD_NODE_ID": "cloud-9"})
    assert config.node_id == "pi-01"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("bus.port=abc", "bus.port"),
        ("bus.port=70000", "bus.port"),
        ("heartbeat_interval_s=fast", "heartbeat_interval_s"),
        ("node_id=bad id", "node_id"),
        ("colour=blue", "colour"),
        ("bus.keepalive_s=1", "bus.keepalive_s"),
        ("escalate_min_confidence=1.5", "escalate_min_confidence"),
        ("router_cloud_timeout_s=0", "router_cloud_timeout_s"),
        ("api_parallel=0", "api_parallel"),
    ],
)
def test_bad_value_error_names_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        load(EdgeConfig, env={}, overrides=[override])
    assert str(error.value).startswith(key)
    assert "\n" not in str(error.value)


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[edge\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load(EdgeConfig, path, env={})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(EdgeConfig, tmp_path / "nope.toml", env={})


def test_environment_reaches_sections_nested_twice():
    from fleet_center.config import CenterConfig

    config = load(CenterConfig, env={"EDGEFLEET_CENTER_METRICS_STORE_URL": "http://influx:8086"}, section="center")
    assert config.metrics.store.url == "http://influx:8086"


def test_an_escalation_threshold_set_by_the_operator_beats_the_fitted_rule():
    from routing.escalation import EscalationRule

    assert load(EdgeConfig, env={}).escalation_rule() is None  # the rule fitted for the edge model decides
    assert load(EdgeConfig, env={}, overrides=["escalate_min_confidence=0.4"]).escalation_rule() == EscalationRule(0.4, 0.3)
    with pytest.raises(ConfigError, match="escalate_max_repetition"):
        load(EdgeConfig, env={}, overrides=["escalate_max_repetition=2"])


def test_the_collaborative_agreement_target_is_off_at_zero_and_refused_outside_its_range():
    assert load(EdgeConfig, env={}).collab_agreement_target == 0.91
    assert load(EdgeConfig, env={}, overrides=["collab_agreement_target=0"]).collab_agreement_target == 0.0
    for wrong in ("1.0", "0.3"):
        with pytest.raises(ConfigError, match="collab_agreement_target"):
            load(EdgeConfig, env={}, overrides=[f"collab_agreement_target={wrong}"])
