"""Models page: each variant's perplexity, load time and time per token against its size; loads and unloads."""

from __future__ import annotations

import logging

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import queries, shaping
from dashboards.common import PageContext, empty_state, fetch

logger = logging.getLogger(__name__)


def render(context: PageContext) -> None:
    st.title("Models")
    profiles = fetch(context, queries.model_profiles, "model profiles")
    events = fetch(context, queries.model_events, "model loads")
    if profiles is None or events is None:
        return
    latest = shaping.latest_profiles(profiles)
    if latest.empty and events.empty:
        empty_state("model profiles or loads", context, "`python -m models profile` measures the variants; edges record every load.")
        return
    if latest.empty:
        st.info("No model profiles recorded yet (`python -m models profile` measures them).", icon=":material/info:")
    else:
        columns = st.columns(3)
        for column, (value, title) in zip(
            columns, [("perplexity", "Perplexity vs size"), ("load_s", "Load time (s) vs size"), ("token_ms", "Time per token (ms) vs size")],
            strict=True,
        ):
            if latest[value].notna().any():
                column.altair_chart(_versus_size(latest, value, title), width="stretch")
            else:
                column.markdown(f"**{title}**")
                column.caption(f"No model has a measured {value.replace('_', ' ')} yet.")
        st.dataframe(
            latest, hide_index=True, placeholder="–", column_order=["model", "size_mb", "perplexity", "load_s", "token_ms"],
            column_config={
                "model": "Model", "size_mb": st.column_config.NumberColumn("Size (MB)", format="%.0f"),
                "perplexity": st.column_config.NumberColumn("Perplexity", format="%.2f"),
                "load_s": st.column_config.NumberColumn("Load (s)", format="%.2f"),
                "token_ms": st.column_config.NumberColumn("Per token (ms)", format="%.1f"),
            },
        )
    _measured_quality(context)
    st.subheader("Loads and unloads")
    log = shaping.model_event_log(events)
    if log.empty:
        st.caption(f"No loads or unloads in the last {context.range_label}.")
        return
    left, right = st.columns([3, 1])
    left.dataframe(
        log, hide_index=True, placeholder="–",
        column_config={
            "time": st.column_config.DatetimeColumn("Time", format="HH:mm:ss"), "node": "Node", "model": "Model",
            "event": "Event", "size_mb": st.column_config.NumberColumn("Size (MB)", format="%.0f"),
            "load_s": st.column_config.NumberColumn("Load (s)", format="%.1f"),
        },
    )
    right.dataframe(shaping.loaded_per_node(events), hide_index=True, placeholder="–", column_config={"node": "Node", "model": "Loaded now"})


def _measured_quality(context: PageContext) -> None:
    """Each model's quality as the center's evaluations measured it, and the trade-off the scheduler keeps."""
    st.subheader("Measured quality")
    tasks = fetch(context, queries.tasks, "tasks")
    rounds = fetch(context, queries.rounds, "rounds")
    if tasks is None or rounds is None:
        return
    keep = shaping.latest_quality_keep(rounds)
    if keep is not None:
        st.caption(f"Trade-off: an edge model takes a task type only if its quality is at least {keep:.0%} of the best "
                   "model's for that type (`rounds.quality_keep`); faster models win among those.")
    quality = shaping.measured_quality(tasks)
    if quality.empty:
        st.caption(f"No evaluated answers in the last {context.range_label}.")
        return
    chart = (
        alt.Chart(quality)
        .mark_bar()
        .encode(
            # Model names are too long for a bar each under five narrow panels: the legend names them.
            x=alt.X("model:N", title=None, axis=None),
            y=alt.Y("quality:Q", title="mean quality", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("model:N", title="model", legend=alt.Legend(orient="bottom", columns=4)),
            column=alt.Column("task_type:N", title=None),
            tooltip=["model:N", "task_type:N", alt.Tooltip("quality:Q", format=".3f"), "tasks:Q"],
        )
        .properties(width=120, height=200)
    )
    st.altair_chart(chart)


def _versus_size(latest: pd.DataFrame, value: str, title: str) -> alt.LayerChart:
    # Room on the right for the largest model's label.
    size_domain = [0.0, float(latest["size_mb"].max()) * 1.35]
    base = alt.Chart(latest.dropna(subset=[value]), title=title).encode(
        x=alt.X("size_mb:Q", title="size (MB)", scale=alt.Scale(domain=size_domain)),
        y=alt.Y(f"{value}:Q", title=None, scale=alt.Scale(zero=False, padding=20)),
        tooltip=["model:N", alt.Tooltip("size_mb:Q", format=".0f"), alt.Tooltip(f"{value}:Q", format=".2f")],
    )
    points = base.mark_circle(size=90, color="#1565c0")
    labels = base.mark_text(align="left", dx=7, dy=-7, fontSize=11).encode(text="label:N")
    return (points + labels).properties(height=260)
