"""Fleet page: which nodes are up, how busy they are, what they have loaded."""

from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from dashboards import queries, shaping
from dashboards.common import PageContext, empty_state, fetch, format_age
from dashboards.views.charts import over_time

logger = logging.getLogger(__name__)

STATUS_STYLES = {shaping.ONLINE: "color: #2e7d32; font-weight: 600", shaping.OFFLINE: "color: #c62828; font-weight: 600"}


def render(context: PageContext) -> None:
    st.title("Fleet")
    heartbeats = fetch(context, queries.heartbeats, "heartbeats")
    if heartbeats is None:
        return
    if heartbeats.empty:
        empty_state("heartbeats", context, "Edge and cloud nodes send one every few seconds once the fleet runs (`make run`).")
        return
    status = shaping.fleet_status(heartbeats, context.span.now, context.config.offline_after_s)
    _kpis(status)
    _node_table(status)
    left, right = st.columns(2)
    left.altair_chart(over_time(heartbeats, "cpu_percent", "CPU over time", unit="CPU %"), width="stretch")
    right.altair_chart(over_time(heartbeats, "memory_percent", "Memory over time", unit="memory %"), width="stretch")
    if "queue_depth" in heartbeats.columns:
        st.altair_chart(over_time(heartbeats, "queue_depth", "Task queue depth", unit="tasks queued", step=True), width="stretch")


def _kpis(status: pd.DataFrame) -> None:
    online = status[status["status"] == shaping.ONLINE]
    edges = status[status["role"] == "edge"]
    columns = st.columns(4)
    columns[0].metric("Nodes online", f"{len(online)} / {len(status)}", border=True)
    columns[1].metric("Edges online", f"{int((edges['status'] == shaping.ONLINE).sum())} / {len(edges)}", border=True)
    columns[2].metric("Mean CPU (online)", f"{online['cpu_percent'].mean():.0f} %" if len(online) else "–", border=True)
    columns[3].metric("Tasks queued", int(online["queue_depth"].fillna(0).sum()), border=True)


def _node_table(status: pd.DataFrame) -> None:
    table = status.assign(
        status=status["status"].map({shaping.ONLINE: "● online", shaping.OFFLINE: "● offline"}),
        last_heartbeat=status["heartbeat_age_s"].map(format_age),
    )
    styled = table.style.map(lambda text: STATUS_STYLES.get(text.split()[-1], ""), subset=["status"])
    st.subheader("Nodes")
    st.dataframe(
        styled,
        hide_index=True, placeholder="–",
        column_order=["node", "role", "status", "last_heartbeat", "cpu_percent", "memory_percent", "load_1m",
                      "queue_depth", "rejected_inputs", "loaded_model_ids"],
        column_config={
            "node": "Node", "role": "Role", "status": "Status", "last_heartbeat": "Last heartbeat",
            "cpu_percent": st.column_config.ProgressColumn("CPU", format="%.0f%%", min_value=0, max_value=100, color="auto-inverse"),
            "memory_percent": st.column_config.ProgressColumn("Memory", format="%.0f%%", min_value=0, max_value=100, color="auto-inverse"),
            "load_1m": st.column_config.NumberColumn("Load (1 min)", format="%.2f"),
            "queue_depth": st.column_config.NumberColumn("Queue"),
            "rejected_inputs": st.column_config.NumberColumn(
                "Rejected inputs", help="malformed or refused messages and HTTP requests since the node started"),
            "loaded_model_ids": st.column_config.TextColumn("Loaded models", width="large"),
        },
    )
