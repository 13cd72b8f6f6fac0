"""Bench figures come from the worker's own /metrics exposition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from feedwarden.stream.bench import (
    BenchOptions,
    BenchResult,
    _batch_metrics,
    _in_run_overhead,
    _latencies,
    _texts,
    describe_runs,
    medians,
    steady_rate,
)
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


def test_throughput_skips_the_first_tenth_of_the_decisions() -> None:
    # 10 decisions at t=0 (a small first batch), then 100 per second up to 1010.
    arrivals = [(0.0, 10)] + [(1.0 + k, 10 + 100 * (k + 1)) for k in range(10)]
    # From the arrival that reaches 10% (101 of 1010: t=1, 110 seen) to the last (t=10).
    assert steady_rate(arrivals) == pytest.approx((1010 - 110) / 9.0)
    assert steady_rate(arrivals, skip=0.0) == pytest.approx(1000 / 10.0)


def test_bench_texts_skip_what_the_worker_would_dead_letter(tmp_path: Path) -> None:
    source = tmp_path / "posts.jsonl"
    source.write_text('{"text": "short"}\n\n{"text": "far too long"}\n{"text": "  "}\n{"id": 1}\n')
    assert _texts(source, max_text_chars=5) == ["short"]
    with pytest.raises(ValueError, match="at most 3 characters"):
        _texts(source, max_text_chars=3)


def test_latency_runs_from_the_send_to_the_first_decision_of_the_post() -> None:
    sent = {"a": 10.0, "b": 10.5, "c": 11.0}
    # "a" decided twice (a redelivery), "c" not yet, "other" sent in another run
    decisions = [(10.1, "a"), (10.25, "a"), (10.9, "b"), (11.5, "other")]
    assert sorted(_latencies(sent, decisions)) == pytest.approx([0.1, 0.4])


def test_in_run_overhead_is_the_rest_of_the_worker_over_its_engine_threads() -> None:
    assert _in_run_overhead(2.75, 2.5) == {"worker_engine_threads_cpu_ms_per_post": 2.5,
                                           "worker_overhead_in_run": 0.1}
    assert _in_run_overhead(2.75, 0.0) == {}  # no engine thread found (not Linux): no figure


def _run_figures(ratio: float, e2e: float, p99: float | None) -> dict[str, Any]:
    latency = {} if p99 is None else {"p99_ms": p99}
    return {"context": {"posts": 100, "source": "s", "batch_size": 8, "load_before": "0.1",
                        "load_after": "0.2"},
            "ratio_end_to_end_to_engine": ratio, "end_to_end": {"posts_per_second": e2e},
            "latency": latency}


def test_repeated_runs_report_the_median_of_each_headline_figure() -> None:
    runs = [_run_figures(0.9, 700.0, 150.0), _run_figures(0.95, 760.0, None),
            _run_figures(0.85, 720.0, 130.0)]
    assert medians(runs) == {"ratio_end_to_end_to_engine": 0.9, "end_to_end.posts_per_second": 720.0,
                             "latency.p99_ms": 140.0}  # a figure missing from a run is left out of it
    table = describe_runs(runs).splitlines()
    assert table[0].startswith("3 runs; posts: 100 from s; batch 8; load average 0.1 -> 0.2")
    assert table[1] == "figure | run 1 | run 2 | run 3 | median"
    assert "ratio end to end / engine | 0.9 | 0.95 | 0.85 | 0.9" in table
    assert "latency p99, ms | 150 | ? | 130 | 140" in table
    assert "engine, posts/s | ? | ? | ? | ?" in table
    assert not any("smoke test" in line for line in table)
    runs[1]["stages"] = {"batches": 3}
    assert describe_runs(runs).endswith("as few as 3 batches: a smoke test, not a measurement")


def test_repeat_counts_whole_runs() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BenchOptions(repeat=0)
