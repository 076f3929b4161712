"""The center's durable state in SQLite: rounds, task instances, results and placements.

A restarted center reads it to resume at the next round without re-running finished tasks.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round_index INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,               -- offloading | caching
    started_at REAL NOT NULL,
    finished_at REAL,
    summary TEXT                      -- JSON: latency, quality per type, where tasks ran
);
CREATE TABLE IF NOT EXISTS tasks (
    instance_id TEXT PRIMARY KEY,
    round_index INTEGER NOT NULL,
    task_id INTEGER NOT NULL,         -- id in the shipped task set
    task_type INTEGER NOT NULL,
    arrived_at_edge TEXT NOT NULL,
    assigned_node TEXT,               -- edge id or cloud worker id
    model_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending'   -- pending | dispatched | done
);
CREATE TABLE IF NOT EXISTS results (
    instance_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    status TEXT NOT NULL,
    answer TEXT NOT NULL,
    quality REAL,
    latency_s REAL,
    tokens INTEGER,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions (
    instance_id TEXT PRIMARY KEY,
    predicted_s REAL NOT NULL,        -- the scheduler's dispatch-to-result latency at dispatch
    measured_s REAL                   -- what it took, dispatch to result at the center
);
CREATE TABLE IF NOT EXISTS placements (
    round_index INTEGER NOT NULL,
    edge_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    status TEXT NOT NULL,             -- deployed | kept | failed
    PRIMARY KEY (round_index, edge_id, model_id)
);
"""


@dataclass(frozen=True, slots=True)
class StoredTask:
    instance_id: str
    round_index: int
    task_id: int
    task_type: int
    arrived_at_edge: str
    assigned_node: str | None
    model_id: str | None
    attempts: int
    status: str


class CenterDb:
    """Thread-safe wrapper over one SQLite file (WAL, so the dashboard may read while we write)."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _run(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # ---- rounds ----------------------------------------------------------------------------------

    def next_round(self) -> int:
        """The first round not finished yet (a round interrupted mid-way is resumed, not restarted)."""
        rows = self._run("SELECT MIN(round_index) FROM rounds WHERE finished_at IS NULL")
        if rows[0][0] is not None:
            return int(rows[0][0])
        rows = self._run("SELECT MAX(round_index) FROM rounds")
        return 0 if rows[0][0] is None else int(rows[0][0]) + 1

    def start_round(self, round_index: int, kind: str) -> None:
        self._run("INSERT OR IGNORE INTO rounds (round_index, kind, started_at) VALUES (?, ?, ?)",
                  (round_index, kind, time.time()))

    def finish_round(self, round_index: int, summary: dict) -> None:
        self._run("UPDATE rounds SET finished_at = ?, summary = ? WHERE round_index = ?",
                  (time.time(), json.dumps(summary), round_index))

    def round_summary(self, round_index: int) -> dict | None:
        rows = self._run("SELECT summary FROM rounds WHERE round_index = ? AND finished_at IS NOT NULL", (round_index,))
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    def finished_rounds(self) -> list[int]:
        return [int(r[0]) for r in self._run("SELECT round_index FROM rounds WHERE finished_at IS NOT NULL ORDER BY 1")]

    # ---- tasks -----------------------------------------------------------------------------------

    def add_tasks(self, round_index: int, tasks: list[tuple[str, int, int, str]]) -> None:
        """(instance id, task id, task type, arrived at edge) for a new round; existing ones are kept."""
        with self._lock:
            self._conn.executemany(
                "INSERT OR IGNORE INTO tasks (instance_id, round_index, task_id, task_type, arrived_at_edge) "
                "VALUES (?, ?, ?, ?, ?)",
                [(i, round_index, t, ty, e) for i, t, ty, e in tasks],
            )

    def tasks_of(self, round_index: int) -> list[StoredTask]:
        rows = self._run(
            "SELECT instance_id, round_index, task_id, task_type, arrived_at_edge, assigned_node, model_id, attempts, "
            "status FROM tasks WHERE round_index = ? ORDER BY instance_id", (round_index,))
        return [StoredTask(*row) for row in rows]

    def assign(self, instance_id: str, node_id: str, model_id: str) -> None:
        self._run("UPDATE tasks SET assigned_node = ?, model_id = ?, attempts = attempts + 1, status = 'dispatched' "
                  "WHERE instance_id = ?", (node_id, model_id, instance_id))

    def record_result(self, instance_id: str, node_id: str, model_id: str, status: str, answer: str,
                      quality: float | None, latency_s: float, tokens: int) -> bool:
        """Store a result once; False if this task already had one (a duplicate or a late answer)."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (instance_id, node_id, model_id, status, answer, quality, latency_s, tokens, time.time()))
            if cursor.rowcount == 0:
                return False
            self._conn.execute("UPDATE tasks SET status = 'done' WHERE instance_id = ?", (instance_id,))
            return True

    def record_prediction(self, instance_id: str, predicted_s: float) -> None:
        """The latest dispatch's predicted latency (a reassignment predicts again)."""
        self._run("INSERT OR REPLACE INTO predictions VALUES (?, ?, NULL)", (instance_id, predicted_s))

    def record_measured(self, instance_id: str, measured_s: float) -> None:
        self._run("UPDATE predictions SET measured_s = ? WHERE instance_id = ?", (measured_s, instance_id))

    def predictions_of(self, round_index: int) -> list[tuple[str, float, float | None]]:
        """(instance id, predicted s, measured s or None) of a round's tasks."""
        return self._run("SELECT p.instance_id, p.predicted_s, p.measured_s FROM predictions p JOIN tasks t "
                         "USING (instance_id) WHERE t.round_index = ?", (round_index,))

    def generated_tokens(self) -> tuple[dict[int, float], dict[int, float]]:
        """Mean tokens generated per task item and per task type, over answered tasks."""
        by_task = self._run("SELECT t.task_id, AVG(r.tokens) FROM results r JOIN tasks t USING (instance_id) "
                            "WHERE r.status = 'ok' AND r.tokens > 0 GROUP BY t.task_id")
        by_type = self._run("SELECT t.task_type, AVG(r.tokens) FROM results r JOIN tasks t USING (instance_id) "
                            "WHERE r.status = 'ok' AND r.tokens > 0 GROUP BY t.task_type")
        return {int(k): float(v) for k, v in by_task}, {int(k): float(v) for k, v in by_type}

    def results_of(self, round_index: int) -> list[tuple]:
        return self._run(
            "SELECT r.instance_id, t.task_id, t.task_type, r.node_id, r.model_id, r.status, r.answer, r.quality, "
            "r.latency_s, r.tokens FROM results r JOIN tasks t USING (instance_id) WHERE t.round_index = ?",
            (round_index,))

    def quality_history(self, limit: int = 2000) -> list[tuple[str, int, float]]:
        """(model id, task type, quality) of recent successful results, newest first."""
        return self._run(
            "SELECT r.model_id, t.task_type, r.quality FROM results r JOIN tasks t USING (instance_id) "
            "WHERE r.status = 'ok' AND r.quality IS NOT NULL ORDER BY r.finished_at DESC LIMIT ?", (limit,))

    # ---- placements ------------------------------------------------------------------------------

    def record_placement(self, round_index: int, edge_id: str, model_id: str, status: str) -> None:
        self._run("INSERT OR REPLACE INTO placements VALUES (?, ?, ?, ?)", (round_index, edge_id, model_id, status))

    def latest_placement(self) -> dict[str, set[str]]:
        rows = self._run("SELECT MAX(round_index) FROM placements")
        if rows[0][0] is None:
            return {}
        placement: dict[str, set[str]] = {}
        for edge_id, model_id in self._run(
            "SELECT edge_id, model_id FROM placements WHERE round_index = ? AND status != 'failed'", (rows[0][0],)):
            placement.setdefault(edge_id, set()).add(model_id)
        return placement
