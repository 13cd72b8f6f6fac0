"""The whole training pipeline end to end on a few hundred rows (`--tiny`), ~2-3 minutes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from feedwarden.training.data import data_root

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = data_root()
    if not (root / "janitr" / "train.jsonl").is_file():
        pytest.skip(f"training data not found at {root} (set FEEDWARDEN_DATA)")
    pytest.importorskip("torch", reason="the training extra (torch) is not installed")
    from feedwarden.training.config import PipelineConfig
    from feedwarden.training.pipeline import run

    out = tmp_path_factory.mktemp("tiny")
    run(PipelineConfig.tiny(), root, out)
    return out


def test_tiny_pipeline_writes_a_loadable_bundle(tiny_run: Path) -> None:
    from feedwarden.drift.stats import REFERENCE_EDGES
    from feedwarden.models.bundle import load_bundle
    from feedwarden.models.engine import LABELS_METADATA, Engine
    from feedwarden.policy.rules import Policy
    from feedwarden.training.config import PipelineConfig

    bundle = load_bundle(tiny_run / "bundle")
    manifest = bundle.manifest
    assert manifest.head("safety").labels[0] == "scam"
    assert set(manifest.reference) == set(manifest.labels)
    for ref in manifest.reference.values():
        assert sum(ref.hist) == pytest.approx(1.0)
        assert ref.edges == REFERENCE_EDGES and ref.prior is not None and ref.n > 0
    assert PipelineConfig.from_dict(manifest.metrics["config"]) == PipelineConfig.tiny()
    policy = Policy.from_file(bundle.policy_path)
    policy.check_labels({h.name: h.labels for h in manifest.heads})
    engine = Engine(bundle, providers="cpu")
    named = engine.session.get_modelmeta().custom_metadata_map
    assert named[f"{LABELS_METADATA}.safety_logits"] == ",".join(manifest.head("safety").labels)
    scores = engine.score(["free airdrop, connect wallet", "nice weather today"])
    assert scores.probs["safety"].shape == (2, len(manifest.head("safety").labels))


def test_tiny_pipeline_writes_the_report(tiny_run: Path) -> None:
    report = json.loads((tiny_run / "report" / "report.json").read_text())
    assert {
        "labels", "janitr", "tweeteval", "int8_parity", "gates", "regression_vectors", "functional_hate"
    } <= set(report)
    vectors = report["regression_vectors"]
    assert vectors["total"] == len(vectors["failures"]) + vectors["passed"]
    assert "## Regression vectors" in (tiny_run / "report" / "report.md").read_text()
    assert (tiny_run / "report" / "plots" / "scam.png").is_file()


def test_recalibrate_rebuilds_the_runs_own_corpus(tiny_run: Path, tmp_path: Path) -> None:
    """`feedwarden recalibrate` reads the run's settings: today's defaults (another seed, other
    row counts) would cut calib and valid from rows the run trained on."""
    import shutil

    from feedwarden.cli import main
    from feedwarden.models.bundle import load_bundle
    from feedwarden.training.config import PipelineConfig

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["recalibrate", "--out", str(run), "--data", str(data_root())]) == 0
    recalibrated = load_bundle(run / "bundle").manifest.metrics
    assert PipelineConfig.from_dict(recalibrated["config"]) == PipelineConfig.tiny()


def test_release_refuses_a_bundle_that_fails_regression_vectors(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A few hundred rows and steps cannot tell a scam from a tweet: the release gate must see it."""
    from feedwarden.cli import main
    from feedwarden.models.bundle import default_bundle_path

    before = (default_bundle_path() / "manifest.json").read_bytes()
    assert main(["release", str(tiny_run / "bundle")]) == 1
    out = capsys.readouterr().out
    assert "refusing to release" in out and "regression vectors fail for [" in out
    assert re.search(r"\n  [\w-]+ fails: \w+ [01]\.\d{3} \(threshold [01]\.\d{3}\) should", out), out
    assert (default_bundle_path() / "manifest.json").read_bytes() == before
