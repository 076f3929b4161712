"""Altair chart builders shared by the pages (consistent look: time on x, one colour per node)."""

from __future__ import annotations

import logging

import altair as alt
import pandas as pd

logger = logging.getLogger(__name__)

SOURCE_COLORS = alt.Scale(domain=["edge", "cloud", "failed"], range=["#2e7d32", "#1565c0", "#c62828"])
TOKEN_COLORS = alt.Scale(domain=["edge", "cloud"], range=["#2e7d32", "#1565c0"])
ROUND_AXIS = alt.Axis(labelAngle=0, labelOverlap=True)  # round numbers read left to right, thinned when crowded
# Times are UTC everywhere (tables show the stored UTC times; charts would otherwise use the browser's zone).
# Vega's default labels are a 12-hour clock without am/pm; this keeps its ":30" style for sub-minute ticks.
TIME_AXIS = alt.Axis(labelAngle=0, labelExpr="utcFormat(datum.value, datum.value % 60000 ? ':%S' : '%H:%M')")
UTC = alt.Scale(type="utc")


def time_tooltip(field: str = "time") -> alt.Tooltip:
    return alt.Tooltip(f"{field}:T", format="%H:%M:%S", formatType="utc", title=f"{field} (UTC)")


def over_time(data: pd.DataFrame, value: str, title: str, by: str = "node", unit: str = "", step: bool = False) -> alt.Chart:
    """One line per `by` value over time; `step` for counts, which hold their value until the next sample."""
    return (
        alt.Chart(data, title=title)
        .mark_line(point=alt.OverlayMarkDef(size=12), interpolate="step-after" if step else "monotone")
        .encode(
            x=alt.X("time:T", title=None, axis=TIME_AXIS, scale=UTC),
            # Counts get whole-number ticks (an all-zero series would otherwise be labelled 0.000000).
            y=alt.Y(f"{value}:Q", title=unit or value, axis=alt.Axis(format="d", tickMinStep=1) if step else alt.Axis()),
            color=alt.Color(f"{by}:N", title=by),
            tooltip=[time_tooltip(), f"{by}:N", alt.Tooltip(f"{value}:Q", format=".1f")],
        )
        .properties(height=240)
    )
