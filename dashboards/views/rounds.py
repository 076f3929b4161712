"""Rounds page: per round how many tasks ran where, how fast, how well, and when."""

from __future__ import annotations

import logging

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import queries, shaping
from dashboards.common import PageContext, empty_state, fetch
from dashboards.views.charts import ROUND_AXIS, SOURCE_COLORS, TIME_AXIS, UTC, time_tooltip

logger = logging.getLogger(__name__)


def render(context: PageContext) -> None:
    st.title("Rounds")
    rounds = fetch(context, queries.rounds, "rounds")
    if rounds is None:
        return
    summary = shaping.round_summary(rounds)
    if summary.empty:
        empty_state("rounds", context, "The center records a round when its results are in.")
        return
    _kpis(summary)
    st.altair_chart(_timeline(summary), width="stretch")
    left, right = st.columns(2)
    left.altair_chart(_where_tasks_ran(shaping.placement_split(summary)), width="stretch")
    right.altair_chart(_latency(summary), width="stretch")
    tasks = fetch(context, queries.tasks, "tasks")
    if tasks is not None:
        _prediction(tasks)
    st.altair_chart(_quality(shaping.quality_by_type(rounds)), width="stretch")
    _table(summary)


def _kpis(summary: pd.DataFrame) -> None:
    last = summary.iloc[-1]
    columns = st.columns(5)
    columns[0].metric("Rounds", len(summary), border=True)
    columns[1].metric("Last round", f"#{int(last['round_id'])}", border=True)
    columns[2].metric("Tasks", int(summary["tasks"].sum()), border=True)
    share = summary["tasks_edge"].sum() / max(1, summary["tasks_edge"].sum() + summary["tasks_cloud"].sum())
    columns[3].metric("Ran on edges", f"{share:.0%}", border=True)
    scored = summary["quality"].dropna()  # caching rounds run no tasks: the last round with answers
    quality = scored.iloc[-1] if len(scored) else float("nan")
    previous = scored.iloc[-2] if len(scored) > 1 else None
    columns[4].metric(
        "Quality (last round)", "–" if pd.isna(quality) else f"{quality:.2f}",
        delta=None if previous is None or pd.isna(previous) or pd.isna(quality) else f"{quality - previous:+.2f}",
        border=True,
    )


def _prediction(tasks: pd.DataFrame) -> None:
    """The scheduler's predicted dispatch-to-result latency next to the measured one, per round (medians)."""
    series = shaping.prediction_vs_measured(tasks)
    if series.empty:
        st.caption("No predicted latencies recorded yet: the center records one per task it schedules.")
        return
    error = shaping.prediction_error_pct(tasks)
    chart = (
        alt.Chart(series, title=f"Predicted vs measured latency (median per round; median error {error:.0f} %)")
        .mark_line(point=True)
        .encode(
            x=alt.X("round_id:O", title="round", axis=ROUND_AXIS),
            y=alt.Y("latency_s:Q", title="dispatch to result (s)"),
            color=alt.Color("series:N", scale=alt.Scale(domain=["predicted", "measured"], range=["#7e57c2", "#26a69a"]),
                            title=None),
            tooltip=["round_id:O", "series:N", alt.Tooltip("latency_s:Q", format=".2f")],
        )
        .properties(height=240)
    )
    st.altair_chart(chart, width="stretch")


def _timeline(summary: pd.DataFrame) -> alt.Chart:
    data = summary.assign(kind=summary["caching_round"].map({True: "caching round", False: "round"}))
    return (
        alt.Chart(data, title="Round timeline")
        .mark_bar(cornerRadius=3, height=18)
        .encode(
            x=alt.X("start:T", title=None, axis=TIME_AXIS, scale=UTC), x2="end:T",
            y=alt.Y("kind:N", title=None),
            color=alt.Color("kind:N", scale=alt.Scale(domain=["round", "caching round"], range=["#90a4ae", "#ef6c00"]), legend=None),
            tooltip=["round_id:Q", time_tooltip("start"), alt.Tooltip("duration_s:Q", format=".1f"), "tasks:Q"],
        )
        .properties(height=130)
    )


def _where_tasks_ran(split: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(split, title="Where tasks ran")
        .mark_bar()
        .encode(
            x=alt.X("round_id:O", title="round", axis=ROUND_AXIS),
            y=alt.Y("tasks:Q", title="tasks", stack="zero"),
            color=alt.Color("where:N", scale=SOURCE_COLORS, title=None),
            order=alt.Order("where:N", sort="descending"),
            tooltip=["round_id:O", "where:N", "tasks:Q"],
        )
        .properties(height=260)
    )


def _latency(summary: pd.DataFrame) -> alt.Chart:
    long = summary.melt(id_vars=["round_id"], value_vars=["latency_ms_mean", "latency_ms_p95"], var_name="statistic", value_name="ms")
    long["statistic"] = long["statistic"].map({"latency_ms_mean": "mean", "latency_ms_p95": "p95"})
    return (
        alt.Chart(long.dropna(), title="Task latency per round")
        .mark_line(point=True)
        .encode(
            x=alt.X("round_id:O", title="round", axis=ROUND_AXIS), y=alt.Y("ms:Q", title="latency (ms)"),
            color=alt.Color("statistic:N", title=None), tooltip=["round_id:O", "statistic:N", alt.Tooltip("ms:Q", format=".0f")],
        )
        .properties(height=260)
    )


def _quality(per_type: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(per_type.dropna(subset=["quality"]), title="Quality per task type")
        .mark_line(point=True)
        .encode(
            x=alt.X("round_id:O", title="round", axis=ROUND_AXIS), y=alt.Y("quality:Q", title="score", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("task_type:N", title="task type"),
            tooltip=["round_id:O", "task_type:N", "tasks:Q", alt.Tooltip("quality:Q", format=".3f")],
        )
        .properties(height=260)
    )


def _table(summary: pd.DataFrame) -> None:
    st.subheader("Per round")
    st.dataframe(
        summary.assign(edge_share=summary["edge_share"] * 100).sort_values("round_id", ascending=False),
        hide_index=True, placeholder="–",
        column_order=["round_id", "end", "tasks", "tasks_edge", "tasks_cloud", "tasks_failed", "edge_share",
                      "latency_ms_mean", "latency_ms_p95", "quality", "duration_s", "caching_round"],
        column_config={
            "round_id": "Round", "end": st.column_config.DatetimeColumn("Ended", format="HH:mm:ss"),
            "tasks": "Tasks", "tasks_edge": "Edge", "tasks_cloud": "Cloud", "tasks_failed": "Failed",
            "edge_share": st.column_config.ProgressColumn("Edge share", format="%.0f%%", min_value=0, max_value=100, color="#2e7d32"),
            "latency_ms_mean": st.column_config.NumberColumn("Latency mean (ms)", format="%.0f"),
            "latency_ms_p95": st.column_config.NumberColumn("Latency p95 (ms)", format="%.0f"),
            "quality": st.column_config.NumberColumn("Quality", format="%.3f"),
            "duration_s": st.column_config.NumberColumn("Duration (s)", format="%.1f"),
            "caching_round": st.column_config.CheckboxColumn("Caching"),
        },
    )
