"""A pipeline run as metric points: per node per token figures and the split over time (metrics/schema.py)."""

from __future__ import annotations

import logging

from broker.messages.metrics import MetricPoint
from metrics import schema
from pipeline.coordinator import PipelineResult

logger = logging.getLogger(__name__)


def result_points(result: PipelineResult, *, start_ns: int) -> list[MetricPoint]:
    """Points of one run; each position gets its own nanosecond per series (InfluxDB overwrites equal timestamps)."""
    points = []
    for index, figures in enumerate(result.tracker.figures):
        points.append(schema.pipeline_stage_point(
            result.run_id, figures.node_id, figures.position, figures.layers, 1e3 * figures.compute_s,
            1e3 * figures.head_s, 1e3 * figures.send_s, 1e3 * figures.receive_s, 1e3 * figures.queue_s,
            figures.epoch, timestamp_ns=start_ns + index))
    for index, change in enumerate(result.allocations):
        ranges, start = {}, 0
        for node, count in zip(change.node_ids, change.layers, strict=True):
            ranges[node] = (start, start + count)
            start += count
        points += schema.pipeline_allocation_points(result.run_id, change.position - result.prompt_tokens, ranges,
                                                    change.reason, change.imbalance, timestamp_ns=start_ns + index)
    return points
