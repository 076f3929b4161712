"""Query text both stores send: quoting of identifiers and literals, the Flux pipeline, store selection."""

from __future__ import annotations

import pytest

from metrics.config import RecorderConfig, StoreConfig
from metrics.influx1 import Influx1Store, quote_identifier, quote_string
from metrics.influx2 import Influx2Store, flux_query, flux_string
from metrics.store import open_store
from runtime.settings import ConfigError


def test_influxql_quotes_identifiers_and_strings() -> None:
    assert quote_identifier('we"ird') == '"we\\"ird"'
    assert quote_string("it's") == "'it\\'s'"


def test_flux_query_filters_measurement_and_tags_and_pivots_fields() -> None:
    flux = flux_query("fleet", "token", 1_700_000_000_123_456_789, 1_700_000_060_000_000_000, {"session": 's"1'}, 500)
    assert 'from(bucket: "fleet")' in flux
    assert "range(start: 2023-11-14T22:13:20.123456789Z, stop: 2023-11-14T22:14:20.000000000Z)" in flux
    assert 'r._measurement == "token" and r["session"] == "s\\"1"' in flux
    assert 'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")' in flux
    assert flux.rstrip().endswith("limit(n: 500)")
    assert flux_string("${x}") == '"\\${x}"'  # no string interpolation of tag values


def test_backend_setting_picks_the_store() -> None:
    assert isinstance(open_store(StoreConfig()), Influx1Store)
    assert isinstance(open_store(StoreConfig(backend="influx2", token="t")), Influx2Store)


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: StoreConfig(backend="influx3"), "store.backend"),
        (lambda: StoreConfig(url="localhost:8086"), "store.url"),
        (lambda: RecorderConfig(batch_points=10, buffer_points=5), "recorder.buffer_points"),
        (lambda: RecorderConfig(retry_min_s=5.0, retry_max_s=1.0), "recorder.retry_min_s"),
    ],
)
def test_bad_settings_name_their_key(build: object, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build()  # type: ignore[operator]
