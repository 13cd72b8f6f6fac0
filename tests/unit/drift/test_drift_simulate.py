"""The simulator: cells reproduce their reference, shifts do what they say, the script runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from feedwarden.drift import reference_from_scores, window_prevalence
from feedwarden.drift.simulate import (
    BinormalLabel,
    Cells,
    ScoreStream,
    demo_references,
    detection_delay,
    main,
    stream_alarms,
    stream_delay,
    summarise,
)
from feedwarden.drift.stats import REFERENCE_EDGES
from feedwarden.models.bundle import Reference

REFS = demo_references()


@pytest.mark.parametrize("label", sorted(REFS))
def test_cells_reproduce_the_reference(label):
    ref = REFS[label]
    cells = Cells.of(ref)
    assert cells.flagged.sum() == pytest.approx(ref.rate)
    assert (cells.flagged + cells.clear).tolist() == pytest.approx(list(ref.hist))
    assert np.all(cells.flagged >= 0) and np.all(cells.clear >= 0)


def test_shifts():
    cells = Cells.of(REFS["hate"])
    doubled = cells.shifted("rate", 2.0)
    assert doubled.flagged.sum() == pytest.approx(2 * REFS["hate"].rate)
    assert (doubled.flagged + doubled.clear).sum() == pytest.approx(1.0)
    tilted = cells.shifted("tilt", 0.3)
    assert tilted.flagged.sum() == pytest.approx(REFS["hate"].rate)
    assert tilted.clear.sum() == pytest.approx(cells.clear.sum())
    assert tilted.clear[4] > cells.clear[4] and tilted.clear[0] < cells.clear[0]
    with pytest.raises(ValueError):
        cells.shifted("rate", 100.0)


def test_detection_delay_counts_windows_from_the_shift():
    delay = detection_delay(REFS, "hate", "rate", 3.0, n=2000, runs=5, horizon=10, seed=1)
    assert delay.alert == [1, 1, 1, 1, 1]
    assert delay.retrain == [3, 3, 3, 3, 3]  # k = 3 consecutive drifting windows
    assert summarise([None, None]).startswith("never")


def test_script_runs_and_reads_a_manifest(tmp_path, capsys):
    manifest = {"reference": {"hate": {"rate": REFS["hate"].rate, "edges": list(REFS["hate"].edges),
                                       "hist": list(REFS["hate"].hist), "n": 20_000}}}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(_minimal_manifest() | manifest))
    args = ["--manifest", str(path), "--windows", "50", "--runs", "2", "--horizon", "3", "--n", "500"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "windows with any alert" in out and "hate rate x2.0" in out


def _minimal_manifest() -> dict:
    return {
        "format_version": 1, "name": "t", "version": "1", "created_at": "2025-01-01T00:00:00Z",
        "max_length": 128, "heads": [{"name": "safety", "output": "safety", "labels": ["hate"]}],
        "calibration": {"hate": [1.0, 0.0]}, "files": {},
    }


def _score_stream(seed: int) -> tuple[ScoreStream, dict[str, Reference], np.ndarray]:
    """Two calibrated labels (binormal, exact posteriors): 20 000 posts at base rate, then
    2 000 posts that are all "scam" positives (the shift pool); references from a separate
    calibration sample of 20 000 posts."""
    rng = np.random.default_rng(seed)
    scam, spam = BinormalLabel(prior=0.03), BinormalLabel(prior=0.1, separation=2.0)
    base = np.column_stack([scam.sample(rng, 20_000), spam.sample(rng, 20_000)])
    pool = np.column_stack([scam.sample(rng, 2_000, prevalence=1.0), spam.sample(rng, 2_000)])
    thresholds = {"scam": 0.5, "spam": 0.4}
    refs = {
        label: reference_from_scores(model.sample(rng, 20_000), thresholds[label])
        for label, model in (("scam", scam), ("spam", spam))
    }
    stream = ScoreStream(("scam", "spam"), np.vstack([base, pool]), thresholds,
                         {label: REFERENCE_EDGES for label in thresholds}, base=np.arange(20_000))
    return stream, refs, np.arange(20_000, 22_000)


def test_score_stream_windows_keep_what_the_worker_keeps():
    stream, refs, pool = _score_stream(5)
    rng = np.random.default_rng(0)
    rows = stream.rows(rng, 100, share=0.25, pool=pool)
    assert rows.size == 100 and np.isin(rows[:25], pool).all()
    window = stream.window(rows, 60.0, 60.0)
    assert window["scam"].n == 100 and window["scam"].score_sum is not None
    assert window["scam"].flagged == int((stream.scores[rows, 0] >= 0.5).sum())
    assert (window["spam"].window_start, window["spam"].window_end) == (60.0, 120.0)
    with pytest.raises(ValueError):
        stream.rows(rng, 100, share=0.5)


def test_stationary_score_stream_stays_below_alpha_and_a_shift_alerts_at_once():
    stream, refs, pool = _score_stream(6)
    alarms, windows, _ = stream_alarms(stream.windows(np.random.default_rng(1), 500, 1000), refs)
    assert windows == 1000
    assert alarms / windows <= 0.01 + 3 * (0.01 * 0.99 / windows) ** 0.5
    rng = np.random.default_rng(2)
    runs = (stream.windows(rng, 500, 10, share=0.3, pool=pool) for _ in range(5))
    delay = stream_delay(runs, refs, ["scam"])
    assert delay.alert == [1] * 5 and delay.retrain == [3] * 5


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.7])
def test_em_tracks_the_share_of_positives_in_resampled_windows(share):
    stream, refs, pool = _score_stream(7)
    rng = np.random.default_rng(3)
    window = stream.window(stream.rows(rng, 5000, share=share, pool=pool), 0.0)
    truth = share + (1 - share) * 0.03
    assert window_prevalence(window["scam"], refs["scam"]).value == pytest.approx(truth, abs=0.01)
