"""Leaderboard page: every routing cell of the last benchmark job, quality against cloud share, ranked."""

from __future__ import annotations

import logging

import altair as alt
import pandas as pd
import streamlit as st

from dashboards.common import PageContext
from dashboards.leaderboard import LeaderboardError, leaderboard_path, load_leaderboard, pareto_line

logger = logging.getLogger(__name__)


def render(context: PageContext) -> None:
    st.title("Leaderboard")
    path = leaderboard_path(context.config.leaderboard_csv)
    try:
        table = load_leaderboard(path)
    except LeaderboardError as error:
        st.info(f"No leaderboard to show: {error}", icon=":material/info:")
        return
    st.caption(f"From `{path}`: held-out tasks only; quality ratio against the cloud-only cell on the same tasks. "
               "The line joins the Pareto front (no other cell has more quality for fewer cloud queries).")
    left, right = st.columns([3, 2])
    left.altair_chart(_scatter(table), width="stretch")
    best = table.iloc[0]
    right.metric("Best quality ratio", f"{best['quality_ratio']:.3f}", help=str(best["cell"]))
    front = pareto_line(table)
    right.metric("Cells on the Pareto front", f"{len(front)} / {len(table)}")
    right.markdown("**Pareto front**: " + ", ".join(f"{row.cell} ({row.cloud_query_ratio:.2f} cloud)"
                                                    for row in front.itertuples()))
    st.subheader("Ranked cells")
    st.dataframe(
        table, hide_index=True, placeholder="–",
        column_order=["rank", "router", "mining_mode", "edge_variant", "collaboration", "link", "quality",
                      "quality_ratio", "cloud_query_ratio", "cloud_token_share", "ttft_s_p50", "latency_s_p50",
                      "latency_s_p95", "tokens_per_s", "bytes_per_response", "pareto"],
        column_config={
            "rank": "Rank", "router": "Router", "mining_mode": "Mining mode", "edge_variant": "Edge model",
            "collaboration": "Collaboration", "link": "Link",
            "quality": st.column_config.NumberColumn("Quality", format="%.3f"),
            "quality_ratio": st.column_config.NumberColumn("Quality ratio", format="%.3f"),
            "cloud_query_ratio": st.column_config.NumberColumn("Cloud queries", format="%.2f"),
            "cloud_token_share": st.column_config.NumberColumn("Cloud tokens", format="%.2f"),
            "ttft_s_p50": st.column_config.NumberColumn("TTFT p50 (s)", format="%.2f"),
            "latency_s_p50": st.column_config.NumberColumn("Latency p50 (s)", format="%.2f"),
            "latency_s_p95": st.column_config.NumberColumn("Latency p95 (s)", format="%.2f"),
            "tokens_per_s": st.column_config.NumberColumn("Tokens/s", format="%.1f"),
            "bytes_per_response": st.column_config.NumberColumn("Bytes/response", format="%.0f"),
            "pareto": st.column_config.CheckboxColumn("Pareto"),
        },
    )


def _scatter(table: pd.DataFrame) -> alt.LayerChart:
    x = alt.X("cloud_query_ratio:Q", title="Cloud query ratio", scale=alt.Scale(domain=[0, 1]))
    y = alt.Y("quality_ratio:Q", title="Quality ratio (vs cloud only)", scale=alt.Scale(zero=False))
    points = alt.Chart(table).mark_point(filled=True).encode(
        x=x, y=y, color=alt.Color("router:N", title="Router"), shape=alt.Shape("mining_mode:N", title="Mining mode"),
        size=alt.condition("datum.pareto", alt.value(220), alt.value(80)),
        tooltip=["cell", "edge_variant", "collaboration", "link", alt.Tooltip("quality_ratio:Q", format=".3f"),
                 alt.Tooltip("cloud_query_ratio:Q", format=".2f"), "pareto"],
    )
    front = alt.Chart(pareto_line(table)).mark_line(strokeDash=[6, 3], color="#444").encode(x=x, y=y)
    return (front + points).properties(title="Quality vs cloud share (Pareto front dashed)", height=380)
