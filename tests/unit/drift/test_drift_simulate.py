"""The simulator: cells reproduce their reference, shifts do what they say, the script runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from feedwarden.drift.simulate import Cells, demo_references, detection_delay, main, summarise

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
