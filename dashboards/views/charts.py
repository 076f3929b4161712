"""Altair chart builders shared by the pages (consistent look: time on x, one colour per node)."""

from __future__ import annotations

import logging

import altair as alt
import pandas as pd

logger = logging.getLogger(__name__)

SOURCE_COLORS = alt.Scale(domain=["edge", "cloud", "failed"], range=["#2e7d32", "#1565c0", "#c62828"])
TOKEN_COLORS = alt.Scale(domain=["edge", "cloud"], range=["#2e7d32", "#1565c0"])
# Vega's default labels are a 12-hour clock without am/pm; this keeps its ":30" style for sub-minute ticks.
ROUND_AXIS = alt.Axis(labelAngle=0, labelOverlap=True)  # round numbers read left to right, thinned when crowded
TIME_AXIS = alt.Axis(labelAngle=0, labelExpr="timeFormat(datum.value, datum.value % 60000 ? ':%S' : '%H:%M')")


def over_time(data: pd.DataFrame, value: str, title: str, by: str = "node", unit: str = "", step: bool = False) -> alt.Chart:
    """One line per `by` value over time; `step` for counts, which hold their value until the next sample."""
    return (
        alt.Chart(data, title=title)
        .mark_line(point=alt.OverlayMarkDef(size=12), interpolate="step-after" if step else "monotone")
        .encode(
            x=alt.X("time:T", title=None, axis=TIME_AXIS),
            y=alt.Y(f"{value}:Q", title=unit or value),
            color=alt.Color(f"{by}:N", title=by),
            tooltip=[alt.Tooltip("time:T", format="%H:%M:%S"), f"{by}:N", alt.Tooltip(f"{value}:Q", format=".1f")],
        )
        .properties(height=240)
    )
