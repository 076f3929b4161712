"""Altair chart builders shared by the pages (consistent look: time on x, one colour per node)."""

from __future__ import annotations

import logging

import altair as alt
import pandas as pd

logger = logging.getLogger(__name__)

SOURCE_COLORS = alt.Scale(domain=["edge", "cloud", "failed"], range=["#2e7d32", "#1565c0", "#c62828"])


def over_time(data: pd.DataFrame, value: str, title: str, by: str = "node", unit: str = "") -> alt.Chart:
    """One line per `by` value over time."""
    return (
        alt.Chart(data, title=title)
        .mark_line(point=alt.OverlayMarkDef(size=12), interpolate="monotone")
        .encode(
            x=alt.X("time:T", title=None),
            y=alt.Y(f"{value}:Q", title=unit or value),
            color=alt.Color(f"{by}:N", title=by),
            tooltip=[alt.Tooltip("time:T", format="%H:%M:%S"), f"{by}:N", alt.Tooltip(f"{value}:Q", format=".1f")],
        )
        .properties(height=240)
    )
