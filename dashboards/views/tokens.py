"""Tokens page: per-token latency, where tokens were decided (exit layer or cloud), traffic per response,
speculative drafts and the cloud's cost per token by mode."""

from __future__ import annotations

import logging

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import queries, shaping
from dashboards.common import PageContext, empty_state, fetch
from dashboards.views.charts import TIME_AXIS, TOKEN_COLORS, UTC

logger = logging.getLogger(__name__)

ALL_SESSIONS = "All sessions"


def render(context: PageContext) -> None:
    st.title("Tokens")
    tokens = fetch(context, queries.tokens, "token timings")
    if tokens is None:
        return
    if tokens.empty:
        empty_state("tokens", context, "Edges record every token of a collaborative generation.")
        return
    sessions = shaping.token_sessions(tokens)
    choice = st.selectbox("Session", [ALL_SESSIONS, *sessions["session"]], key="token_session")
    selected = shaping.tokens_of(tokens, None if choice == ALL_SESSIONS else choice)
    _kpis(selected, sessions if choice == ALL_SESSIONS else sessions[sessions["session"] == choice])
    st.altair_chart(_latency_timeline(selected, by_position=choice != ALL_SESSIONS), width="stretch")
    left, right = st.columns(2)
    left.altair_chart(_exit_histogram(shaping.exit_layer_histogram(selected)), width="stretch")
    right.altair_chart(_bytes_per_response(sessions), width="stretch")
    st.subheader("Sessions")
    st.dataframe(
        sessions.assign(cloud_ratio=sessions["cloud_ratio"] * 100), hide_index=True, placeholder="–",
        column_config={
            "session": "Session", "node": "Edge", "start": st.column_config.DatetimeColumn("Started", format="HH:mm:ss"),
            "tokens": "Tokens", "cloud_tokens": "Cloud tokens",
            "cloud_ratio": st.column_config.ProgressColumn("Cloud requests", format="%.0f%%", min_value=0, max_value=100, color="#1565c0"),
            "latency_ms_mean": st.column_config.NumberColumn("Latency mean (ms)", format="%.1f"),
            "latency_ms_p95": st.column_config.NumberColumn("Latency p95 (ms)", format="%.1f"),
            "bytes_up": st.column_config.NumberColumn("Bytes up"), "bytes_down": st.column_config.NumberColumn("Bytes down"),
        },
    )
    _cloud_work(context)


def _kpis(tokens: pd.DataFrame, sessions: pd.DataFrame) -> None:
    ratio = shaping.cloud_request_ratio(tokens)
    columns = st.columns(5)
    columns[0].metric("Tokens", len(tokens), border=True)
    columns[1].metric("Cloud requests", "–" if ratio is None else f"{ratio:.0%}", border=True)
    columns[2].metric("Latency mean", f"{tokens['latency_ms'].mean():.1f} ms", border=True)
    columns[3].metric("Latency p95", f"{tokens['latency_ms'].quantile(0.95):.1f} ms", border=True)
    per_response = sessions["bytes_up"].mean() if len(sessions) else 0
    columns[4].metric("Bytes up per response", f"{per_response / 1024:.1f} KiB", border=True)


def _cloud_work(context: PageContext) -> None:
    """Speculative drafts verified / accepted / rejected, and the cloud's cost per token by mode (heartbeats)."""
    heartbeats = fetch(context, queries.heartbeats, "heartbeats")
    if heartbeats is None:
        return
    _budgets(shaping.agreement_budgets(heartbeats))
    drafts = shaping.draft_counts(heartbeats)
    costs = shaping.cloud_cost_per_token(heartbeats)
    if not drafts["drafted"] and costs.empty:
        return
    st.subheader("Speculative drafts and cloud cost")
    columns = st.columns(3)
    columns[0].metric("Drafted tokens (verified)", drafts["drafted"], border=True)
    columns[1].metric("Accepted drafts", drafts["accepted"], border=True)
    columns[2].metric("Rejected drafts", drafts["rejected"], border=True)
    if not costs.empty:
        st.dataframe(costs, hide_index=True, column_config={
            "mode": "Mode", "tokens": "Cloud tokens",
            "cpu_ms_per_token": st.column_config.NumberColumn("Cloud CPU ms / token", format="%.2f"),
            "layer_passes_per_token": st.column_config.NumberColumn("Layer passes / token", format="%.1f"),
        })


def _budgets(budgets: pd.DataFrame) -> None:
    """Each edge's collaborative agreement budget: where it holds expected agreement, and how far it moved."""
    if budgets.empty:
        return
    st.subheader("Collaborative agreement budget")
    st.caption("Expected share of collaborative tokens equal to the full model's (1 − exit score per exit), and the "
               "shift the edge added to its exit thresholds (logits; below 0 exits more) to hold its target.")
    st.dataframe(budgets, hide_index=True, column_config={
        "node": "Edge", "tokens": "Tokens counted",
        "expected_agreement": st.column_config.NumberColumn("Expected agreement", format="%.3f"),
        "shift": st.column_config.NumberColumn("Threshold shift", format="%+.2f"),
    })


def _latency_timeline(tokens: pd.DataFrame, by_position: bool) -> alt.Chart:
    x = alt.X("position:Q", title="token position") if by_position else alt.X("time:T", title=None, axis=TIME_AXIS, scale=UTC)
    return (
        alt.Chart(tokens, title="Per-token latency")
        .mark_circle(size=36, opacity=0.8)
        .encode(
            x=x, y=alt.Y("latency_ms:Q", title="latency (ms)"),
            color=alt.Color("source:N", scale=TOKEN_COLORS, title="decided at"),
            tooltip=["session:N", "position:Q", "source:N", "exit_layer:Q", alt.Tooltip("latency_ms:Q", format=".1f")],
        )
        .properties(height=260)
    )


def _exit_histogram(histogram: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(histogram, title="Exit layer")
        .mark_bar()
        .encode(
            x=alt.X("exit_layer:O", title="layer that decided the token", axis=alt.Axis(labelAngle=0)), y=alt.Y("tokens:Q", title="tokens"),
            color=alt.Color("source:N", scale=TOKEN_COLORS, title="decided at"), tooltip=["exit_layer:O", "source:N", "tokens:Q"],
        )
        .properties(height=260)
    )


def _bytes_per_response(sessions: pd.DataFrame) -> alt.Chart:
    long = sessions.melt(id_vars=["session"], value_vars=["bytes_up", "bytes_down"], var_name="direction", value_name="bytes")
    long["direction"] = long["direction"].map({"bytes_up": "up (edge → cloud)", "bytes_down": "down (cloud → edge)"})
    return (
        alt.Chart(long, title="Bytes per response")
        .mark_bar()
        .encode(
            y=alt.Y("session:N", title=None, sort="-x"), x=alt.X("bytes:Q", title="bytes", stack="zero"),
            color=alt.Color("direction:N", title=None, scale=alt.Scale(range=["#1565c0", "#90caf9"])),
            tooltip=["session:N", "direction:N", "bytes:Q"],
        )
        .properties(height=260)
    )
