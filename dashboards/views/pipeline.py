"""Pipeline page: which node held which layers while a run generated, and per node per token compute vs communication."""

from __future__ import annotations

import logging

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import pipeline_data, queries
from dashboards.common import PageContext, empty_state, fetch

logger = logging.getLogger(__name__)

KIND_COLORS = alt.Scale(domain=list(pipeline_data.COST_KINDS), range=["#2e7d32", "#66bb6a", "#1565c0", "#9e9e9e"])


def render(context: PageContext) -> None:
    st.title("Pipeline")
    stages = fetch(context, queries.pipeline_stages, "pipeline stage figures")
    if stages is None:
        return
    if stages.empty:
        empty_state("pipeline runs", context, "`python -m fleet_center pipeline run` or POST /pipeline records every run.")
        return
    allocations = fetch(context, queries.pipeline_allocations, "pipeline allocations")
    table = pipeline_data.runs(stages)
    run = st.selectbox("Run", list(table["run"]), key="pipeline_run")
    costs = pipeline_data.per_token_costs(stages, run)
    last_position = int(stages[stages["run"] == run]["position"].max()) - int(stages[stages["run"] == run]["position"].min())
    spans = pipeline_data.allocation_spans(allocations if allocations is not None else pd.DataFrame(columns=["run"]),
                                           run, last_position)
    _kpis(costs, spans)
    st.subheader("Allocation over time")
    st.altair_chart(_allocation_chart(spans), width="stretch")
    st.subheader("Compute vs communication")
    left, right = st.columns(2)
    left.altair_chart(_means_chart(pipeline_data.node_means(costs)), width="stretch")
    right.altair_chart(_per_token_chart(costs), width="stretch")
    st.dataframe(table, hide_index=True, column_config={
        "run": "Run", "start": st.column_config.DatetimeColumn("Started", format="HH:mm:ss"), "nodes": "Nodes",
        "tokens": "Positions"})


def _kpis(costs: pd.DataFrame, spans: pd.DataFrame) -> None:
    columns = st.columns(4)
    tokens = costs["position"].nunique() if not costs.empty else 0
    columns[0].metric("Tokens", tokens, border=True)
    columns[1].metric("Reallocations", int((spans.drop_duplicates("from_token")["reason"] != "start").sum()), border=True)
    compute = costs[costs["kind"].isin(["compute_ms", "head_ms"])]["ms"].sum() / max(tokens, 1)
    communication = costs[costs["kind"] == "communication_ms"]["ms"].sum() / max(tokens, 1)
    columns[2].metric("Compute per token", f"{compute:.1f} ms", border=True)
    columns[3].metric("Communication per token", f"{communication:.1f} ms", border=True)


def _allocation_chart(spans: pd.DataFrame) -> alt.Chart:
    return alt.Chart(spans).mark_rect(stroke="white").encode(
        x=alt.X("from_token:Q", title="token"), x2="to_token:Q",
        y=alt.Y("start:Q", title="layer", scale=alt.Scale(reverse=True)), y2="end:Q",
        color=alt.Color("node:N", title="Node"),
        tooltip=["node", "start", "end", "layers", "from_token", "reason"],
    ).properties(height=260)


def _means_chart(means: pd.DataFrame) -> alt.Chart:
    return alt.Chart(means).mark_bar().encode(
        x=alt.X("node:N", title="Node", axis=alt.Axis(labelAngle=0)), y=alt.Y("ms:Q", title="ms per token (mean)"),
        color=alt.Color("kind:N", title="", scale=KIND_COLORS), tooltip=["node", "kind", alt.Tooltip("ms:Q", format=".2f")],
    ).properties(height=260)


def _per_token_chart(costs: pd.DataFrame) -> alt.Chart:
    compute = costs[costs["kind"].isin(["compute_ms", "communication_ms"])]
    return alt.Chart(compute).mark_line(point=False).encode(
        x=alt.X("position:Q", title="position"), y=alt.Y("ms:Q", title="ms"),
        color=alt.Color("node:N", title="Node"), strokeDash=alt.StrokeDash("kind:N", title=""),
        tooltip=["node", "kind", "position", alt.Tooltip("ms:Q", format=".2f")],
    ).properties(height=260)
