"""The per-task metrics CSV: rows round-trip, appends across restarts, rotation, torn rows, threads."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_node.metrics_csv import (
    COLUMNS,
    MetricsCsvError,
    MetricsCsvWriter,
    TaskMetricsRow,
    read_rows,
)

WHEN = datetime(2026, 11, 23, 13, 30, 57, 123456, tzinfo=UTC)


def full_row(task_id: str = "t1") -> TaskMetricsRow:
    return TaskMetricsRow(
        timestamp=WHEN,
        task_id=task_id,
        task_type="TC",
        model="smollm2-135m-int8",
        status="ok",
        error="",
        queue_wait_s=0.25,
        load_time_s=1.5,
        ttft_s=0.125,
        total_latency_s=2.75,
        tokens=12,
        tokens_per_s=4.5,
        mean_exit_layer=17.25,
        cpu_percent=88.5,
        memory_percent=41.0,
        load_avg_1m=1.75,
        loaded_models=("smollm2-135m-int8", "smollm2-135m-bf16"),
    )


def failed_row(task_id: str = "t2") -> TaskMetricsRow:
    return TaskMetricsRow(
        timestamp=WHEN,
        task_id=task_id,
        task_type="arithmetic",
        model="missing-model",
        status="error",
        error='load failed: "file missing", retry later\nsecond line',
    )


def test_written_rows_read_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "llm_metrics.csv"
    with MetricsCsvWriter(path) as writer:
        writer.write(full_row())
        writer.write(failed_row())
    assert read_rows(path) == [full_row(), failed_row()]


def test_file_starts_with_the_documented_header(tmp_path: Path) -> None:
    path = tmp_path / "llm_metrics.csv"
    MetricsCsvWriter(path).close()
    assert path.read_text().splitlines() == [",".join(COLUMNS)]


def test_row_is_on_disk_before_the_writer_closes(tmp_path: Path) -> None:
    path = tmp_path / "llm_metrics.csv"
    writer = MetricsCsvWriter(path)
    writer.write(full_row())
    assert read_rows(path) == [full_row()]
    writer.close()


def test_reopening_appends_without_a_second_header(tmp_path: Path) -> None:
    path = tmp_path / "llm_metrics.csv"
    with MetricsCsvWriter(path) as writer:
        writer.write(full_row("first"))
    with MetricsCsvWriter(path) as writer:
        writer.write(full_row("second"))
    assert [row.task_id for row in read_rows(path)] == ["first", "second"]
    assert path.read_text().count("timestamp,task_id") == 1


def test_file_with_a_different_header_is_rotated_aside(tmp_path: Path) -> None:
    path = tmp_path / "llm_metrics.csv"
    path.write_text("Timestamp,Task Type,Model\n2024-01-01,arithmetic,qwen\n")
    with MetricsCsvWriter(path) as writer:
        writer.write(full_row())
    rotated = [p for p in tmp_path.iterdir() if p != path]
    assert len(rotated) == 1
    assert rotated[0].read_text().startswith("Timestamp,Task Type,Model")
    assert read_rows(path) == [full_row()]


def test_torn_last_row_is_closed_so_the_next_row_stays_intact(tmp_path: Path) -> None:
    path = tmp_path / "llm_metrics.csv"
    with MetricsCsvWriter(path) as writer:
        writer.write(full_row("before"))
    with path.open("a") as file:
        file.write("2026-11-23T13:30:57+00:00,torn")  # a crash mid-row
    with MetricsCsvWriter(path) as writer:
        writer.write(full_row("after"))
    rows = read_rows(path, skip_malformed=True)
    assert [row.task_id for row in rows] == ["before", "after"]


def test_reader_names_the_line_of_a_malformed_row(tmp_path: Path) -> None:
    path = tmp_path / "llm_metrics.csv"
    with MetricsCsvWriter(path) as writer:
        writer.write(full_row())
    with path.open("a") as file:
        file.write("not-a-time" + "," * (len(COLUMNS) - 1) + "\r\n")
    with pytest.raises(MetricsCsvError, match="line 3"):
        read_rows(path)


def test_concurrent_writers_produce_only_whole_rows(tmp_path: Path) -> None:
    path = tmp_path / "llm_metrics.csv"
    with MetricsCsvWriter(path) as writer:
        threads = [
            threading.Thread(target=lambda n=n: [writer.write(full_row(f"{n}-{i}")) for i in range(50)])
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert len(read_rows(path)) == 200


def test_writer_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "edge-1" / "llm_metrics.csv"
    with MetricsCsvWriter(path) as writer:
        writer.write(full_row())
    assert read_rows(path) == [full_row()]


def test_write_after_close_is_refused(tmp_path: Path) -> None:
    writer = MetricsCsvWriter(tmp_path / "llm_metrics.csv")
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(full_row())


def test_naive_timestamp_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        TaskMetricsRow(timestamp=datetime(2026, 1, 1), task_id="t", task_type="QA", model="m", status="ok")
