"""Drift on the worker without a broker: batch stats, closed windows on a fake clock, the publish path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwarden.drift import SustainedDrift, WindowStats
from feedwarden.stream.drift import (
    DriftMonitor,
    DriftPlan,
    Entry,
    batch_stats,
    window_start,
)
from feedwarden.stream.loop import ModelLoop
from feedwarden.stream.topology import BatchReport
from tests.unit.stream.loop_support import (
    EDGES,
    MONITORED,
    Sent,
    incoming,
    make_loop,
    run_batch,
    tiny_references,
    write_version,
)

WINDOW = 10.0
CLEAN = "hello lovely world"


@pytest.fixture()
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    write_version(root, "v1")
    return root


def _plan() -> DriftPlan:
    refs = tiny_references()
    return DriftPlan("v1", {label: 0.5 for label in refs}, refs)


def _window(label: str, start: float, n: int, flagged: int) -> WindowStats:
    scores = np.r_[np.full(flagged, 0.9997), np.full(n - flagged, 0.0003)]
    return WindowStats.from_scores(label, scores, threshold=0.5, edges=EDGES, window_start=start,
                                   window_end=start + WINDOW)


def _entries(start: float, n: int, scam: int, version: str = "v1") -> list[Entry]:
    return [Entry(version, label, _window(label, start, n, scam if label == "scam" else 0))
            for label in MONITORED]


def test_plan_monitors_ruled_labels_with_a_reference_at_their_lowest_threshold(registry: Path) -> None:
    loop, _ = make_loop(registry)
    plan = loop.monitor.plan
    assert plan.version == "v1"
    assert set(plan.thresholds) == set(MONITORED)  # topic_news / topic_sports have no rule
    assert plan.thresholds["scam"] == 0.7 and plan.thresholds["spam"] == 0.5


def test_batch_stats_count_decided_posts_per_monitored_label(registry: Path) -> None:
    loop, _ = make_loop(registry)
    texts = ["free scam", "scam giveaway", CLEAN, "buy now", "election"]
    report = loop.service.moderator.moderate_batch(incoming(texts))
    stats = {s.label: s for s in batch_stats(report, loop.monitor.plan, at=1234.5, window_s=WINDOW)}
    assert set(stats) == set(MONITORED)
    assert all(s.n == 5 and sum(s.hist) == 5 for s in stats.values())
    assert (stats["scam"].flagged, stats["promo"].flagged, stats["hate"].flagged) == (2, 2, 0)
    assert stats["scam"].hist[-1] == 2 and stats["scam"].hist[0] == 3
    assert (stats["scam"].window_start, stats["scam"].window_end) == (1230.0, 1240.0)
    assert stats["scam"].score_sum is not None and stats["scam"].score_sum[-1] == pytest.approx(2.0, abs=1e-3)


def test_batch_stats_of_an_all_invalid_batch_are_empty(registry: Path) -> None:
    loop, _ = make_loop(registry)
    assert batch_stats(BatchReport(), loop.monitor.plan, at=0.0, window_s=WINDOW) == []


def test_window_grid() -> None:
    assert window_start(1234.5, 300.0) == 1200.0 and window_start(1200.0, 300.0) == 1200.0


def test_a_window_is_due_once_after_it_closes_plus_grace() -> None:
    monitor = DriftMonitor(_plan(), WINDOW, started_at=0.0, min_posts=100)
    entries = _entries(1000.0, 400, 8)
    assert monitor.due(entries, now=1010.0 + 4.9) == {}  # closed, but within the grace
    due = monitor.due(entries, now=1010.0 + 5.1)
    assert list(due) == [1000.0] and set(due[1000.0]) == set(MONITORED)
    monitor.evaluate(due[1000.0])
    assert monitor.due(entries, now=1020.0) == {}


def test_windows_of_other_versions_or_before_the_process_started_are_skipped() -> None:
    monitor = DriftMonitor(_plan(), WINDOW, started_at=1005.0)
    assert monitor.due(_entries(990.0, 400, 8), now=1100.0) == {}  # ended before this process started
    assert monitor.due(_entries(1000.0, 400, 8, version="v0"), now=1100.0) == {}
    assert list(monitor.due(_entries(1000.0, 400, 8), now=1100.0)) == [1000.0]
    assert monitor.due(_entries(1000.0, 400, 8), now=1000.0 + 700) == {}  # beyond the horizon


def test_stationary_window_is_quiet_and_a_scam_wave_alerts_with_its_evidence() -> None:
    monitor = DriftMonitor(_plan(), WINDOW, started_at=0.0, min_posts=200)
    quiet = monitor.evaluate({e.label: e.stats for e in _entries(1000.0, 1000, 20)})
    assert quiet.alerts == () and quiet.request is None
    assert quiet.ratios and all(ratio < 1.0 for ratio in quiet.ratios.values())
    wave = monitor.evaluate({e.label: e.stats for e in _entries(1010.0, 1000, 150)})
    assert {a.label for a in wave.alerts} == {"scam"}
    assert all(wave.ratios[("scam", a.statistic.name)] >= 1.0 for a in wave.alerts)
    alert = wave.alerts[0]
    assert (alert.n, alert.observed_rate, alert.reference_rate) == (1000, 0.15, pytest.approx(0.02))
    assert alert.severity == "critical"


def test_too_few_posts_are_not_tested() -> None:
    monitor = DriftMonitor(_plan(), WINDOW, started_at=0.0, min_posts=200)
    small = monitor.evaluate({e.label: e.stats for e in _entries(1000.0, 100, 50)})
    assert small.alerts == () and small.ratios == {}


def test_sustained_drift_requests_once_after_k_of_m_and_resets_on_a_new_bundle() -> None:
    monitor = DriftMonitor(_plan(), WINDOW, started_at=0.0, sustained=SustainedDrift(k=3, m=5))
    requests = [monitor.evaluate({e.label: e.stats for e in _entries(1000.0 + i * WINDOW, 1000, 150)}).request
                for i in range(4)]
    assert [r is not None for r in requests] == [False, False, True, False]  # then the cooldown
    request = requests[2]
    assert request is not None and request.labels == ("scam",) and len(request.windows) == 3
    assert request.model_version == "v1" and {a.label for a in request.evidence} == {"scam"}
    monitor.reset(DriftPlan("v2", _plan().thresholds, _plan().references))
    again = [monitor.evaluate({e.label: e.stats for e in _entries(2000.0 + i * WINDOW, 1000, 150)}).request
             for i in range(3)]
    assert [r is not None for r in again] == [False, False, True]


def test_hook_to_table_to_alerts_and_retrain_request(registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop end to end on a fake clock: batches -> stats messages -> merged cells -> published."""
    clock = [1_000_000.0]
    monkeypatch.setattr("feedwarden.stream.loop.time.time", lambda: clock[0])
    loop, sent = make_loop(registry, window_s=WINDOW, min_posts=200, sustain_k=2, sustain_m=3)
    loop.monitor.started_at = 0.0
    table: Table = {}
    for window in range(3):
        clock[0] = 1_000_000.0 + window * WINDOW
        scam_every = 50 if window == 0 else 4  # 2 % stationary, then a 25 % scam wave
        for batch in range(5):
            texts = ["free scam" if (batch * 64 + i) % scam_every == 0 else CLEAN for i in range(64)]
            run_batch(loop, texts, start=window * 1000 + batch * 64)
        _merge(loop, sent, table)
    clock[0] = 1_000_000.0 + 3 * WINDOW + 6.0
    verdicts = asyncio.run(loop.evaluate_closed(_cells(table)))
    assert [v.window_start for v in verdicts] == [1_000_000.0 + i * WINDOW for i in range(3)]
    assert [len(v.alerts) > 0 for v in verdicts] == [False, True, True]
    alerts = sent.json("drift.alerts")
    assert {a["label"] for a in alerts} == {"scam"} and alerts[0]["n"] == 320
    assert set(alerts[0]) >= {"window_start", "window_end", "observed_rate", "reference_rate", "statistic"}
    (request,) = sent.json("retrain.requests")
    assert request["labels"] == ["scam"] and request["model_version"] == "v1"
    metrics = loop.metrics
    assert metrics.retrain_requests._value.get() == 1
    assert metrics.drift_observed_rate.labels("scam")._value.get() == pytest.approx(0.25, abs=0.01)
    assert metrics.drift_reference_rate.labels("scam")._value.get() == pytest.approx(0.02)


Table = dict[tuple[str, float], dict[str, Any]]


def _merge(loop: ModelLoop, sent: Sent, table: Table) -> None:
    """What the drift-merge agent does, with a dict for the windowed table."""
    for message in sent.stats():
        key = (message.version, message.at)
        merged = loop.merge(message.version, message.stats, table.get(key))
        if merged is not None:
            table[key] = merged
    sent.records.pop("drift.stats", None)


def _cells(table: Table) -> list[Entry]:
    return [Entry(version, label, WindowStats.from_dict(stats))
            for (version, _at), cell in table.items() for label, stats in cell.items()]


def test_late_stats_for_an_evaluated_window_are_counted_not_merged(registry: Path) -> None:
    loop, sent = make_loop(registry, window_s=WINDOW)
    run_batch(loop, ["free scam", CLEAN])
    (message,) = sent.stats()
    loop.monitor._evaluated.add(("v1", message.stats[0]["window_start"]))
    assert loop.merge(message.version, message.stats, None) is None
    assert loop.metrics.drift_late_stats._value.get() == 1


def test_one_cell_per_window_holds_every_label_and_skips_a_malformed_one(registry: Path) -> None:
    """The table's value: label -> stats, merged message by message; a bad cell costs only itself."""
    loop, sent = make_loop(registry, window_s=WINDOW)
    run_batch(loop, ["free scam", CLEAN])
    run_batch(loop, [CLEAN, CLEAN, CLEAN], start=2)
    first, second = sent.stats()
    cell = loop.merge(first.version, first.stats, None)
    assert cell is not None and set(cell) == set(MONITORED)
    merged = loop.merge(second.version, [*second.stats, {"label": "scam", "n": "many"}], cell)
    assert merged is not None
    assert {label: stats["n"] for label, stats in merged.items()} == dict.fromkeys(MONITORED, 5)
    assert merged["scam"]["flagged"] == 1


@given(
    scores=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
    cuts=st.lists(st.integers(1, 59), max_size=4),
)
@settings(max_examples=60, deadline=None)
def test_merged_batch_stats_equal_the_stats_of_the_whole_window(scores: list[float], cuts: list[int]) -> None:
    """What the table relies on: merging per-batch stats in any split gives the window's stats."""
    plan = _plan()
    matrix = np.tile(np.array(scores)[:, None], (1, len(MONITORED)))

    def stats_of(rows: np.ndarray) -> dict[str, WindowStats]:
        report = BatchReport(decided=[None] * len(rows), labels=MONITORED, scores=rows)  # type: ignore[list-item]
        return {s.label: s for s in batch_stats(report, plan, at=1005.0, window_s=WINDOW)}

    whole = stats_of(matrix)
    edges = sorted({c for c in cuts if c < len(scores)})
    parts = [stats_of(part) for part in np.split(matrix, edges)]
    for label in MONITORED:
        merged = parts[0][label]
        for part in parts[1:]:
            merged = merged.merge(part[label])
        expected = whole[label]
        assert (merged.n, merged.flagged, merged.hist) == (expected.n, expected.flagged, expected.hist)
