"""Bench figures come from the worker's own /metrics exposition."""

from __future__ import annotations

from prometheus_client import generate_latest

from feedwarden.stream.bench import BenchResult, _batch_metrics
from feedwarden.stream.metrics import Metrics


def test_batch_count_and_stage_time_are_read_from_the_exposition() -> None:
    metrics = Metrics()
    for size in (64, 64, 10):
        metrics.batch_size.observe(size)
    metrics.stage_seconds.labels("infer").observe(0.75)
    metrics.stage_seconds.labels("produce").observe(0.25)
    batches, stages = _batch_metrics(generate_latest(metrics.registry).decode())
    assert batches == 3
    assert stages == {"infer": 0.75, "produce": 0.25}
    line = BenchResult(64, 138, 2.0, batches, stages).describe()
    assert "69 posts/s" in line and "mean 46.0 posts" in line and "infer 75%, produce 25%" in line
