"""`feedwarden bench --quick --json` runs end to end and reports every figure (no timing assertions)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

from feedwarden.models.bundle import Bundle

pytestmark = pytest.mark.integration


def test_quick_bench_prints_the_expected_keys(released_bundle: Bundle) -> None:
    env = os.environ | {"FEEDWARDEN_BUNDLE": str(released_bundle.path)}
    done = subprocess.run(
        [sys.executable, "-m", "feedwarden.cli", "bench", "--quick", "--json", "--posts", "120",
         "--paced-seconds", "2"],
        env=env, capture_output=True, text=True, timeout=170,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert set(result) >= {"context", "engine", "end_to_end", "ratio_end_to_end_to_engine", "latency",
                           "stages", "rss"}
    assert result["end_to_end"]["posts"] == 120
    # timed by the decision records' producer timestamps: real ones span the drain, unset ones (-1) nothing
    assert 0 < result["end_to_end"]["seconds_first_to_last"] < 170
    assert result["engine"]["posts_per_second"] > 0 and result["ratio_end_to_end_to_engine"] > 0
    assert {"p50_ms", "p95_ms", "p99_ms"} <= set(result["latency"])
    assert result["latency"]["decided"] == result["latency"]["posts"]
    assert {"decode", "tokenize", "infer", "policy", "produce"} <= set(result["stages"]["seconds"])
    assert result["rss"]["hwm_mib"] > 0
    # the worker's engine threads are told apart by their OS name, and do most of its work
    e2e = result["end_to_end"]
    assert 0 < e2e["worker_engine_threads_cpu_ms_per_post"] < e2e["worker_cpu_ms_per_post"]
    assert e2e["worker_overhead_in_run"] > 0
    assert "[bench" in done.stderr  # progress lines


def test_repeated_bench_reports_each_run_and_the_medians(released_bundle: Bundle) -> None:
    env = os.environ | {"FEEDWARDEN_BUNDLE": str(released_bundle.path)}
    done = subprocess.run(
        [sys.executable, "-m", "feedwarden.cli", "bench", "--quick", "--json", "--posts", "120",
         "--paced-seconds", "2", "--repeat", "2"],
        env=env, capture_output=True, text=True, timeout=340,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    runs = result["runs"]
    assert [run["end_to_end"]["posts"] for run in runs] == [120, 120]
    assert "run 2 of 2" in done.stderr
    ratios = [run["ratio_end_to_end_to_engine"] for run in runs]
    assert result["median"]["ratio_end_to_end_to_engine"] == round(statistics.median(ratios), 3)
    assert result["median"]["latency.p99_ms"] > 0
