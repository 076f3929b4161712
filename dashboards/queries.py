"""What each dashboard page reads: one function per measurement over a time range, through the MetricStore interface.

No Streamlit here: these run the same under `streamlit run`, AppTest and plain tests.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pandas as pd

from metrics import schema
from metrics.store import MetricStore

logger = logging.getLogger(__name__)

PROFILE_WINDOW_S = 365 * 24 * 3600  # model profiles are measured rarely: look back a year whatever the range


@dataclass(frozen=True, slots=True)
class TimeRange:
    """[start_ns, stop_ns) in nanoseconds since the epoch."""

    start_ns: int
    stop_ns: int

    @classmethod
    def last(cls, seconds: float, now_ns: int | None = None) -> TimeRange:
        stop_ns = time.time_ns() if now_ns is None else now_ns
        # A little past now: points stamped by a node whose clock runs slightly ahead still show.
        return cls(stop_ns - int(seconds * 1e9), stop_ns + 60 * 1_000_000_000)

    @property
    def now(self) -> pd.Timestamp:
        return pd.Timestamp(self.stop_ns - 60 * 1_000_000_000, unit="ns", tz="UTC")


def heartbeats(store: MetricStore, span: TimeRange, limit: int = 50_000) -> pd.DataFrame:
    """Raises StoreError, like every query here."""
    return store.query(schema.HEARTBEAT, span.start_ns, span.stop_ns, limit=limit)


def rounds(store: MetricStore, span: TimeRange, limit: int = 50_000) -> pd.DataFrame:
    return store.query(schema.ROUND, span.start_ns, span.stop_ns, limit=limit)


def caching(store: MetricStore, span: TimeRange, limit: int = 50_000) -> pd.DataFrame:
    return store.query(schema.CACHING, span.start_ns, span.stop_ns, limit=limit)


def tasks(store: MetricStore, span: TimeRange, limit: int = 50_000) -> pd.DataFrame:
    return store.query(schema.TASK, span.start_ns, span.stop_ns, limit=limit)


def tokens(store: MetricStore, span: TimeRange, limit: int = 50_000) -> pd.DataFrame:
    return store.query(schema.TOKEN, span.start_ns, span.stop_ns, limit=limit)


def model_events(store: MetricStore, span: TimeRange, limit: int = 50_000) -> pd.DataFrame:
    return store.query(schema.MODEL_EVENT, span.start_ns, span.stop_ns, limit=limit)


def model_profiles(store: MetricStore, span: TimeRange, limit: int = 50_000) -> pd.DataFrame:
    start_ns = min(span.start_ns, span.stop_ns - PROFILE_WINDOW_S * 1_000_000_000)
    return store.query(schema.MODEL_PROFILE, start_ns, span.stop_ns, limit=limit)


def pipeline_stages(store: MetricStore, span: TimeRange, limit: int = 50_000) -> pd.DataFrame:
    """Per node per token figures of pipeline runs (issue 18)."""
    return store.query(schema.PIPELINE_STAGE, span.start_ns, span.stop_ns, limit=limit)


def pipeline_allocations(store: MetricStore, span: TimeRange, limit: int = 50_000) -> pd.DataFrame:
    return store.query(schema.PIPELINE_ALLOCATION, span.start_ns, span.stop_ns, limit=limit)
