"""What every page shares: the store, the sidebar's time range and refresh, live refresh, empty and error states."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pandas as pd
import streamlit as st

from dashboards.config import DashboardConfig, load_config
from dashboards.queries import TimeRange
from metrics.errors import StoreError
from metrics.store import MetricStore, open_store
from runtime.settings import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

TIME_RANGES_S = {
    "5 minutes": 300,
    "15 minutes": 900,
    "1 hour": 3600,
    "6 hours": 6 * 3600,
    "24 hours": 24 * 3600,
    "7 days": 7 * 24 * 3600,
}
DEFAULT_RANGE = "15 minutes"


@dataclass(frozen=True)
class PageContext:
    """What a page's render function gets: where to read, which window, the settings."""

    config: DashboardConfig
    store: MetricStore
    span: TimeRange
    range_label: str


@st.cache_resource(show_spinner=False)
def _store(config: DashboardConfig) -> MetricStore:
    # One HTTP client per server for the whole app; the config is frozen, so it is a cache key.
    return open_store(config.store_config())


def config_or_stop() -> DashboardConfig:
    """The dashboard's config; a bad EDGEFLEET_DASHBOARD_* value shows an error and stops the page."""
    try:
        return load_config()
    except ConfigError as error:
        st.error(f"Dashboard configuration is invalid: {error}")
        st.stop()
        raise  # st.stop() raises; this keeps type checkers sure nothing follows


def sidebar(config: DashboardConfig) -> None:
    """Time range and live refresh controls, and which store is read."""
    with st.sidebar:
        st.selectbox("Time range", list(TIME_RANGES_S), index=list(TIME_RANGES_S).index(DEFAULT_RANGE), key="time_range")
        st.toggle(f"Live (every {config.refresh_s:g} s)", value=config.refresh_s > 0, key="live",
                  disabled=config.refresh_s <= 0)
        where = config.db if config.backend == "influx1" else f"{config.org}/{config.bucket}"
        st.caption(f"Reading {config.backend} at {config.url}, {where}. Times are UTC.")


def page_context() -> PageContext:
    """Built fresh on every (fragment) run, so 'now' moves with live refresh."""
    config = config_or_stop()
    label = st.session_state.get("time_range", DEFAULT_RANGE)
    return PageContext(config, _store(config), TimeRange.last(TIME_RANGES_S.get(label, 900)), label)


def live(render: Callable[[PageContext], None]) -> None:
    """Run a page's body as a fragment that re-runs itself every refresh_s while Live is on."""
    config = config_or_stop()
    every = config.refresh_s if config.refresh_s > 0 and st.session_state.get("live", True) else None

    @st.fragment(run_every=every)
    def body() -> None:
        render(page_context())

    body()


def fetch(context: PageContext, query: Callable[..., T], what: str) -> T | None:
    """Run a query; if the store fails, explain it on the page and return None."""
    try:
        result = query(context.store, context.span, context.config.max_rows)
    except StoreError as error:
        logger.warning("dashboard query for %s failed: %s", what, error)
        st.error(
            f"Cannot read {what} from {context.config.backend} at {context.config.url}. "
            "Is InfluxDB running (`make run` starts it) and the URL right (EDGEFLEET_DASHBOARD_URL)?"
        )
        with st.expander("Details"):
            st.code(str(error))
        return None
    if isinstance(result, pd.DataFrame) and len(result) >= context.config.max_rows:
        # Queries return the newest rows; say so rather than let a long range look like a short one.
        st.caption(
            f"Showing the newest {context.config.max_rows:,} {what} of the last {context.range_label}; "
            "older ones are left out (pick a shorter range or raise EDGEFLEET_DASHBOARD_MAX_ROWS)."
        )
    return result


def empty_state(what: str, context: PageContext, hint: str) -> None:
    """A friendly note instead of empty charts."""
    st.info(
        f"No {what} recorded in the last {context.range_label}. {hint} "
        "Pick a longer time range in the sidebar if the fleet ran earlier.",
        icon=":material/info:",
    )


def format_age(seconds: float) -> str:
    if pd.isna(seconds):
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
