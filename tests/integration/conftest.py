"""Fixtures shared by the integration tests that need the labelled data or the released bundle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from feedwarden.models.bundle import default_bundle_path
from feedwarden.training.data import data_root


@pytest.fixture(scope="module")
def data() -> Path:
    root = data_root()
    if not (root / "janitr" / "calib.jsonl").is_file():
        pytest.skip(f"no labelled data at {root} (set FEEDWARDEN_DATA)")
    return root


@pytest.fixture(scope="module")
def bundle() -> Path:
    path = Path(os.environ.get("FEEDWARDEN_TEST_BUNDLE", default_bundle_path()))
    if not (path / "manifest.json").is_file():
        pytest.skip(f"no released bundle at {path} yet (set FEEDWARDEN_TEST_BUNDLE)")
    return path
