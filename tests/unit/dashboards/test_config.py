"""Dashboard configuration from EDGEFLEET_DASHBOARD_* variables."""

from __future__ import annotations

import pytest

from dashboards.config import load_config
from runtime.settings import ConfigError


def test_environment_sets_backend_url_and_database() -> None:
    config = load_config({"EDGEFLEET_DASHBOARD_URL": "http://metrics:8086", "EDGEFLEET_DASHBOARD_DB": "fleet",
                          "EDGEFLEET_DASHBOARD_REFRESH_S": "2", "EDGEFLEET_CENTER_ID": "other role's setting"})
    store = config.store_config()
    assert (store.backend, store.url, store.db, config.refresh_s) == ("influx1", "http://metrics:8086", "fleet", 2.0)


def test_influx2_settings_reach_the_store_config() -> None:
    config = load_config({"EDGEFLEET_DASHBOARD_BACKEND": "influx2", "EDGEFLEET_DASHBOARD_ORG": "ops",
                          "EDGEFLEET_DASHBOARD_BUCKET": "fleet", "EDGEFLEET_DASHBOARD_TOKEN": "secret"})
    store = config.store_config()
    assert (store.backend, store.org, store.bucket, store.token) == ("influx2", "ops", "fleet", "secret")


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [("BACKEND", "graphite", "store.backend"), ("URL", "influx:8086", "store.url"), ("REFRESH_S", "-1", "dashboard.refresh_s")],
)
def test_bad_values_name_their_key(name: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config({f"EDGEFLEET_DASHBOARD_{name}": value})
