"""Pure DataFrame shaping for the pages: raw points in (one row per point), the tables and series a page draws out.

Every function accepts the empty DataFrame a store returns when nothing was recorded, and
columns missing because a field was never set (builders leave out unknown values).
"""

from __future__ import annotations

import logging

import pandas as pd

from metrics import schema

logger = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"


def with_columns(data: pd.DataFrame, defaults: dict[str, object]) -> pd.DataFrame:
    """`data` with every column in `defaults` present (filled with the default where missing)."""
    data = data.copy()
    for column, default in defaults.items():
        if column not in data.columns:
            data[column] = default
    return data


# ---- Fleet -------------------------------------------------------------------------------------------


def fleet_status(heartbeats: pd.DataFrame, now: pd.Timestamp, offline_after_s: float) -> pd.DataFrame:
    """One row per node from its latest heartbeat: status, heartbeat age and vital signs; edges first."""
    columns = ["node", "role", "status", "heartbeat_age_s", "cpu_percent", "memory_percent", "load_1m",
               "queue_depth", "loaded_models", "loaded_model_ids", "rejected_inputs"]
    if heartbeats.empty:
        return pd.DataFrame(columns=columns)
    data = with_columns(heartbeats, {"role": "", "loaded_model_ids": "", "loaded_models": 0, "queue_depth": 0,
                                     "cpu_percent": float("nan"), "memory_percent": float("nan"), "load_1m": float("nan"),
                                     "rejected_inputs": float("nan")})
    latest = data.sort_values("time").groupby("node", as_index=False).tail(1).copy()
    latest["heartbeat_age_s"] = (now - latest["time"]).dt.total_seconds().clip(lower=0.0)
    latest["status"] = latest["heartbeat_age_s"].map(lambda age: ONLINE if age <= offline_after_s else OFFLINE)
    latest["loaded_model_ids"] = latest["loaded_model_ids"].fillna("").astype(str).str.replace(",", ", ")
    role_order = latest["role"].map({"edge": 0, "cloud": 1, "center": 2}).fillna(3)
    latest = latest.assign(_order=role_order).sort_values(["_order", "node"])
    return latest[columns].reset_index(drop=True)


# ---- Rounds ------------------------------------------------------------------------------------------


def round_summary(rounds: pd.DataFrame) -> pd.DataFrame:
    """One row per round (its task_type="all" point), oldest first, with start/end times and edge share."""
    columns = ["round_id", "start", "end", "tasks", "tasks_edge", "tasks_cloud", "tasks_failed", "edge_share",
               "latency_ms_mean", "latency_ms_p95", "quality", "duration_s", "caching_round"]
    if rounds.empty:
        return pd.DataFrame(columns=columns)
    data = with_columns(rounds, {"task_type": schema.ALL_TASK_TYPES, "tasks_failed": 0, "latency_ms_mean": float("nan"),
                                 "latency_ms_p95": float("nan"), "quality": float("nan"), "duration_s": 0.0,
                                 "caching_round": False})
    summary = data[data["task_type"] == schema.ALL_TASK_TYPES].copy()
    summary = summary.sort_values("time").groupby("round_id", as_index=False).tail(1)
    summary["end"] = summary["time"]
    summary["start"] = summary["time"] - pd.to_timedelta(summary["duration_s"].astype(float), unit="s")
    ran = (summary["tasks_edge"] + summary["tasks_cloud"]).astype(float)
    summary["edge_share"] = (summary["tasks_edge"] / ran.where(ran > 0)).astype(float)
    summary["caching_round"] = summary["caching_round"].fillna(False).astype(bool)
    summary["round_id"] = summary["round_id"].astype(int)
    return summary.sort_values("round_id")[columns].reset_index(drop=True)


def placement_split(summary: pd.DataFrame) -> pd.DataFrame:
    """Long form for a stacked bar: round_id, where (edge, cloud, failed), tasks."""
    if summary.empty:
        return pd.DataFrame(columns=["round_id", "where", "tasks"])
    counts = summary[["round_id", "tasks_edge", "tasks_cloud", "tasks_failed"]]
    long = counts.melt(id_vars=["round_id"], value_vars=["tasks_edge", "tasks_cloud", "tasks_failed"],
                        var_name="where", value_name="tasks")
    long["where"] = long["where"].str.removeprefix("tasks_")
    return long.sort_values(["round_id", "where"]).reset_index(drop=True)


def quality_by_type(rounds: pd.DataFrame) -> pd.DataFrame:
    """round_id, task_type, quality, latency_ms_mean for every task type (not the summary), oldest first."""
    columns = ["round_id", "task_type", "tasks", "quality", "latency_ms_mean"]
    if rounds.empty or "task_type" not in rounds.columns:
        return pd.DataFrame(columns=columns)
    data = with_columns(rounds, {"quality": float("nan"), "latency_ms_mean": float("nan")})
    per_type = data[data["task_type"] != schema.ALL_TASK_TYPES]
    per_type = per_type.sort_values("time").groupby(["round_id", "task_type"], as_index=False).tail(1)
    return per_type.sort_values(["round_id", "task_type"])[columns].reset_index(drop=True)


def prediction_vs_measured(tasks: pd.DataFrame) -> pd.DataFrame:
    """round_id, series (predicted | measured), latency_s: per round, the median of each over its tasks."""
    columns = ["round_id", "series", "latency_s"]
    if tasks.empty or not {"predicted_ms", "measured_ms", "round_id"} <= set(tasks.columns):
        return pd.DataFrame(columns=columns)
    known = tasks.dropna(subset=["predicted_ms", "measured_ms"])
    known = known[known["round_id"] >= 0]
    if known.empty:
        return pd.DataFrame(columns=columns)
    medians = known.groupby("round_id", as_index=False)[["predicted_ms", "measured_ms"]].median()
    long = medians.melt(id_vars=["round_id"], var_name="series", value_name="latency_ms")
    long["series"] = long["series"].str.removesuffix("_ms")
    long["latency_s"] = long["latency_ms"] / 1e3
    long["round_id"] = long["round_id"].astype(int)
    return long.sort_values(["round_id", "series"])[columns].reset_index(drop=True)


def prediction_error_pct(tasks: pd.DataFrame) -> float | None:
    """Median over tasks of |predicted - measured| / measured, in percent; None without both figures."""
    if tasks.empty or not {"predicted_ms", "measured_ms"} <= set(tasks.columns):
        return None
    known = tasks.dropna(subset=["predicted_ms", "measured_ms"])
    known = known[known["measured_ms"] > 0]
    if known.empty:
        return None
    return float(((known["predicted_ms"] - known["measured_ms"]).abs() / known["measured_ms"]).median() * 100)


def measured_quality(tasks: pd.DataFrame) -> pd.DataFrame:
    """model, task_type, quality (mean of evaluated answers), tasks: what the center's evaluations measured."""
    columns = ["model", "task_type", "quality", "tasks"]
    if tasks.empty or "quality" not in tasks.columns:
        return pd.DataFrame(columns=columns)
    known = tasks.dropna(subset=["quality"])
    if known.empty:
        return pd.DataFrame(columns=columns)
    grouped = known.groupby(["model", "task_type"], as_index=False).agg(quality=("quality", "mean"), tasks=("quality", "size"))
    return grouped.sort_values(["model", "task_type"])[columns].reset_index(drop=True)


def latest_quality_keep(rounds: pd.DataFrame) -> float | None:
    """The center's quality-against-latency setting from its newest round summary, if recorded."""
    if rounds.empty or "quality_keep" not in rounds.columns:
        return None
    known = rounds.dropna(subset=["quality_keep"]).sort_values("time")
    return None if known.empty else float(known["quality_keep"].iloc[-1])


# ---- Caching -----------------------------------------------------------------------------------------

KEPT, ADDED, EVICTED, FAILED = "kept", "added", "evicted", "failed"


def caching_round_ids(caching: pd.DataFrame) -> list[int]:
    """Caching rounds in the data, newest first."""
    if caching.empty or "round_id" not in caching.columns:
        return []
    return sorted({int(r) for r in caching["round_id"].dropna()}, reverse=True)


def placement_cells(caching: pd.DataFrame, round_id: int) -> pd.DataFrame:
    """One row per (model, edge) of a caching round: change, status, deploy_s.

    change: kept, added, failed (to be added, but its deployment failed), evicted, or "" if absent.
    """
    columns = ["model", "edge", "placed", "changed", "change", "status", "deploy_s"]
    if caching.empty:
        return pd.DataFrame(columns=columns)
    data = with_columns(caching, {"status": "", "deploy_s": float("nan"), "changed": False, "placed": False})
    cells = data[data["round_id"] == round_id].sort_values("time").groupby(["model", "edge"], as_index=False).tail(1).copy()
    cells["placed"] = cells["placed"].fillna(False).astype(bool)
    cells["changed"] = cells["changed"].fillna(False).astype(bool)

    def change(row: pd.Series) -> str:
        if row["placed"]:
            if not row["changed"]:
                return KEPT
            return FAILED if row["status"] == "failed" else ADDED
        return EVICTED if row["changed"] else ""

    cells["change"] = cells.apply(change, axis=1) if not cells.empty else pd.Series(dtype=str)
    cells["deploy_s"] = pd.to_numeric(cells["deploy_s"], errors="coerce")
    return cells.sort_values(["model", "edge"])[columns].reset_index(drop=True)


def placement_matrix(cells: pd.DataFrame) -> pd.DataFrame:
    """Models as rows, edges as columns, each cell its change (kept / added / failed / evicted / "")."""
    if cells.empty:
        return pd.DataFrame()
    matrix = cells.pivot_table(index="model", columns="edge", values="change", aggfunc="last").fillna("")
    matrix.columns.name = None
    return matrix.sort_index()


def changes_per_round(caching: pd.DataFrame) -> pd.DataFrame:
    """round_id, added, evicted, failed, deploy_s_max per caching round, oldest first."""
    columns = ["round_id", "added", "evicted", "failed", "deploy_s_max"]
    if caching.empty:
        return pd.DataFrame(columns=columns)
    data = with_columns(caching, {"status": "", "deploy_s": float("nan"), "changed": False, "placed": False})
    data = data.assign(
        added=data["placed"].astype(bool) & data["changed"].astype(bool),
        evicted=~data["placed"].astype(bool) & data["changed"].astype(bool),
        failed=data["status"].astype(str) == "failed",
    )
    grouped = data.groupby("round_id").agg(
        added=("added", "sum"), evicted=("evicted", "sum"), failed=("failed", "sum"), deploy_s_max=("deploy_s", "max")
    )
    return grouped.reset_index().astype({"round_id": int, "added": int, "evicted": int, "failed": int})[columns]


# ---- Tokens ------------------------------------------------------------------------------------------


def token_sessions(tokens: pd.DataFrame) -> pd.DataFrame:
    """One row per session, newest first: node, tokens, cloud ratio, latency mean/p95, bytes up/down."""
    columns = ["session", "node", "start", "tokens", "cloud_tokens", "cloud_ratio", "latency_ms_mean",
               "latency_ms_p95", "bytes_up", "bytes_down"]
    if tokens.empty:
        return pd.DataFrame(columns=columns)
    data = with_columns(tokens, {"bytes_up": 0, "bytes_down": 0, "source": "edge"})
    data = data.assign(is_cloud=data["source"] == "cloud")
    grouped = data.groupby("session").agg(
        node=("node", "first"), start=("time", "min"), tokens=("latency_ms", "size"),
        cloud_tokens=("is_cloud", "sum"), latency_ms_mean=("latency_ms", "mean"),
        latency_ms_p95=("latency_ms", lambda s: s.quantile(0.95)), bytes_up=("bytes_up", "sum"),
        bytes_down=("bytes_down", "sum"),
    ).reset_index()
    grouped["cloud_ratio"] = grouped["cloud_tokens"] / grouped["tokens"]
    return grouped.sort_values("start", ascending=False)[columns].reset_index(drop=True)


def cloud_request_ratio(tokens: pd.DataFrame) -> float | None:
    """Share of tokens the cloud decided; None without tokens."""
    if tokens.empty or "source" not in tokens.columns:
        return None
    return float((tokens["source"] == "cloud").mean())


def exit_layer_histogram(tokens: pd.DataFrame) -> pd.DataFrame:
    """exit_layer, source, tokens: how many tokens left at each layer (cloud tokens under the cloud's layer)."""
    if tokens.empty or "exit_layer" not in tokens.columns:
        return pd.DataFrame(columns=["exit_layer", "source", "tokens"])
    data = with_columns(tokens, {"source": "edge"})
    counts = data.groupby(["exit_layer", "source"]).size().reset_index(name="tokens")
    counts["exit_layer"] = counts["exit_layer"].astype(int)
    return counts.sort_values(["exit_layer", "source"]).reset_index(drop=True)


def tokens_of(tokens: pd.DataFrame, session: str | None) -> pd.DataFrame:
    """The tokens of one session (all sessions for None), oldest first."""
    if tokens.empty or session is None:
        return tokens
    return tokens[tokens["session"] == session].reset_index(drop=True)


def draft_counts(heartbeats: pd.DataFrame) -> dict[str, int]:
    """Speculative drafts the cloud workers verified, accepted and rejected (their latest cumulative counters)."""
    if heartbeats.empty or "drafts_verified" not in heartbeats.columns:
        return {"drafted": 0, "accepted": 0, "rejected": 0}
    latest = _latest_per_node(heartbeats, ["drafts_verified", "drafts_accepted"])
    drafted, accepted = int(latest["drafts_verified"].sum()), int(latest["drafts_accepted"].sum())
    return {"drafted": drafted, "accepted": accepted, "rejected": drafted - accepted}


def cloud_cost_per_token(heartbeats: pd.DataFrame) -> pd.DataFrame:
    """mode, tokens, cpu_ms_per_token, layer_passes_per_token: the cloud workers' cost by collaboration mode.

    From the latest cumulative counters of each cloud worker, summed over workers; modes without
    tokens are left out.
    """
    columns = ["mode", "tokens", "cpu_ms_per_token", "layer_passes_per_token"]
    rows = []
    for mode in schema.CLOUD_COST_MODES:
        names = [f"cost_{mode}_tokens", f"cost_{mode}_cpu_ms", f"cost_{mode}_layer_passes"]
        if heartbeats.empty or not set(names) <= set(heartbeats.columns):
            continue
        latest = _latest_per_node(heartbeats, names)
        tokens = float(latest[names[0]].sum())
        if tokens > 0:
            rows.append({"mode": mode, "tokens": int(tokens), "cpu_ms_per_token": float(latest[names[1]].sum()) / tokens,
                         "layer_passes_per_token": float(latest[names[2]].sum()) / tokens})
    return pd.DataFrame(rows, columns=columns)


def agreement_budgets(heartbeats: pd.DataFrame) -> pd.DataFrame:
    """node, tokens, expected_agreement, shift: each edge's collaborative agreement budget (its latest counters)."""
    columns = ["node", "tokens", "expected_agreement", "shift"]
    names = list(schema.EDGE_BUDGET_COUNTERS)
    if heartbeats.empty or not set(names) <= set(heartbeats.columns):
        return pd.DataFrame(columns=columns)
    latest = _latest_per_node(heartbeats, names)
    latest = latest[latest["budget_tokens"] > 0]
    return pd.DataFrame({
        "node": latest["node"], "tokens": latest["budget_tokens"].astype(int),
        "expected_agreement": 1.0 - latest["budget_expected_disagreements"] / latest["budget_tokens"],
        "shift": latest["budget_shift"],
    }, columns=columns).sort_values("node").reset_index(drop=True)


def _latest_per_node(heartbeats: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The newest row with all of `names` set, per node."""
    data = heartbeats.dropna(subset=names)
    return data.sort_values("time").groupby("node", as_index=False).tail(1)


# ---- Models ------------------------------------------------------------------------------------------


def latest_profiles(profiles: pd.DataFrame) -> pd.DataFrame:
    """The newest profile per model: model, size_mb, perplexity, load_s, token_ms; smallest first."""
    columns = ["model", "label", "size_mb", "perplexity", "load_s", "token_ms"]
    if profiles.empty:
        return pd.DataFrame(columns=columns)
    data = with_columns(profiles, {"perplexity": float("nan"), "load_s": float("nan"), "token_ms": float("nan")})
    latest = data.sort_values("time").groupby("model", as_index=False).tail(1).copy()
    latest["size_mb"] = latest["bytes"].astype(float) / 1e6
    labels = short_names(list(latest["model"]))
    latest["label"] = latest["model"].map(labels)
    return latest.sort_values("size_mb")[columns].reset_index(drop=True)


def short_names(models: list[str]) -> dict[str, str]:
    """Chart labels: when one id is the dash-prefix of all others (the base model), the others drop it.

    ["smollm2-135m", "smollm2-135m-int8"] → {"smollm2-135m": "smollm2-135m", "smollm2-135m-int8": "int8"}.
    """
    for base in sorted(models, key=len):
        if len(models) > 1 and all(model == base or model.startswith(base + "-") for model in models):
            return {model: model if model == base else model[len(base) + 1 :] for model in models}
    return {model: model for model in models}


def model_event_log(events: pd.DataFrame) -> pd.DataFrame:
    """Loads and unloads, newest first: time, node, model, event, size_mb, load_s."""
    columns = ["time", "node", "model", "event", "size_mb", "load_s"]
    if events.empty:
        return pd.DataFrame(columns=columns)
    data = with_columns(events, {"load_s": float("nan"), "bytes": 0})
    data["size_mb"] = data["bytes"].astype(float) / 1e6
    data["load_s"] = pd.to_numeric(data["load_s"], errors="coerce")
    return data.sort_values("time", ascending=False)[columns].reset_index(drop=True)


def loaded_per_node(events: pd.DataFrame) -> pd.DataFrame:
    """node, model for models whose latest event is a load (what the events say is in memory now)."""
    if events.empty:
        return pd.DataFrame(columns=["node", "model"])
    latest = events.sort_values("time").groupby(["node", "model"], as_index=False).tail(1)
    return latest[latest["event"] == "load"][["node", "model"]].sort_values(["node", "model"]).reset_index(drop=True)
