"""Caching page: the model × edge placement each caching round chose, what changed, how deployment went."""

from __future__ import annotations

import logging

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import queries, shaping
from dashboards.common import PageContext, empty_state, fetch
from dashboards.views.charts import ROUND_AXIS

logger = logging.getLogger(__name__)

CELL_LABELS = {shaping.KEPT: "● kept", shaping.ADDED: "+ deployed", shaping.FAILED: "✖ deploy failed",
               shaping.EVICTED: "− evicted", "": ""}
CELL_STYLES = {
    shaping.KEPT: "background-color: #e8f5e9; color: #1b5e20",
    shaping.ADDED: "background-color: #a5d6a7; color: #1b5e20; font-weight: 600",
    shaping.FAILED: "background-color: #c62828; color: white; font-weight: 600",
    shaping.EVICTED: "background-color: #ffcdd2; color: #b71c1c",
    "": "color: #9e9e9e",
}
STATUS_STYLES = {"failed": "background-color: #ffcdd2; color: #b71c1c; font-weight: 600",
                 "ready": "color: #1b5e20", "deploying": "color: #ef6c00"}


def render(context: PageContext) -> None:
    st.title("Caching")
    caching = fetch(context, queries.caching, "caching decisions")
    if caching is None:
        return
    round_ids = shaping.caching_round_ids(caching)
    if not round_ids:
        empty_state("caching decisions", context, "The center runs a caching round every 21st round.")
        return
    round_id = st.selectbox("Caching round", round_ids, format_func=lambda r: f"round {r}", key="caching_round")
    cells = shaping.placement_cells(caching, round_id)
    _kpis(cells)
    left, right = st.columns([3, 2])
    with left:
        st.subheader(f"Placement after round {round_id}")
        matrix = shaping.placement_matrix(cells)
        styled = matrix.style.map(lambda change: CELL_STYLES.get(change, "")).format(lambda change: CELL_LABELS.get(change, change))
        st.dataframe(styled, width="stretch")
        st.caption("Rows: models; columns: edges. Changes since the previous caching round are highlighted.")
    with right:
        st.subheader("Deployments")
        changes = cells[cells["changed"]]
        if changes.empty:
            st.success("No changes: every edge kept its models.")
        else:
            table = changes[["edge", "model", "status", "deploy_s"]].assign(
                deploy_s=changes["deploy_s"].map(lambda seconds: "–" if pd.isna(seconds) else f"{seconds:.1f} s")
            )
            st.dataframe(
                table.style.map(lambda status: STATUS_STYLES.get(status, ""), subset=["status"]),
                hide_index=True, width="stretch",
                column_config={"edge": "Edge", "model": "Model", "status": "Status", "deploy_s": "Deploy time"},
            )
    history = shaping.changes_per_round(caching)
    if len(history) > 1:
        st.altair_chart(_history(history), width="stretch")


def _kpis(cells: pd.DataFrame) -> None:
    placed = cells[cells["placed"]]
    deployed = cells[cells["change"] == shaping.ADDED]  # failed deployments are counted on their own
    columns = st.columns(4)
    columns[0].metric("Models placed", len(placed), border=True)
    columns[1].metric("Deployed", len(deployed), border=True)
    columns[2].metric("Evicted", int((cells["change"] == shaping.EVICTED).sum()), border=True)
    failed = int((cells["status"] == "failed").sum())
    columns[3].metric("Failed deployments", failed, border=True, delta="needs a look" if failed else None, delta_color="inverse")


def _history(history: pd.DataFrame) -> alt.Chart:
    long = history.melt(id_vars=["round_id"], value_vars=["added", "evicted", "failed"], var_name="change", value_name="cells")
    return (
        alt.Chart(long, title="Changes per caching round")
        .mark_bar()
        .encode(
            x=alt.X("round_id:O", title="caching round", axis=ROUND_AXIS), xOffset="change:N", y=alt.Y("cells:Q", title="model × edge cells"),
            color=alt.Color("change:N", scale=alt.Scale(domain=["added", "evicted", "failed"], range=["#43a047", "#e57373", "#b71c1c"])),
            tooltip=["round_id:O", "change:N", "cells:Q"],
        )
        .properties(height=220)
    )
