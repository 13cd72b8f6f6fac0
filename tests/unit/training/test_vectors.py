"""The regression suite's parser and judge, on hand-made scores (no model)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from feedwarden.models.bundle import Bundle
from feedwarden.policy.rules import Policy
from feedwarden.training import vectors
from feedwarden.training.vectors import KINDS, Vector, check, load_vectors, summarize

CUTOFFS = {"scam": 0.4, "spam": 0.5, "promo": 0.6, "hate": 0.35}
GOOD = {"id": "ok", "kind": "positive", "text": "t", "fires": ["scam"]}


def test_fires_quiet_and_fires_any_are_judged_at_each_labels_threshold() -> None:
    vector = Vector("v", "positive", "t", fires=("scam",), fires_any=("spam", "promo"), quiet=("hate",))
    assert check(vector, {"scam": 0.4, "spam": 0.1, "promo": 0.6, "hate": 0.349}, CUTOFFS).passed
    outcome = check(vector, {"scam": 0.39, "spam": 0.45, "promo": 0.2, "hate": 0.35}, CUTOFFS)
    assert outcome.problems == (
        "scam 0.390 (threshold 0.400) should fire",
        "one of ['spam', 'promo'] should fire; closest spam 0.450 (threshold 0.500)",
        "hate 0.350 (threshold 0.350) should stay quiet",
    )


def test_a_label_the_bundle_lacks_fails_the_vector() -> None:
    outcome = check(Vector("v", "positive", "t", fires=("giveaway",)), {"scam": 0.9}, CUTOFFS)
    assert outcome.problems == ("the bundle has no label ['giveaway']",)


def test_summary_separates_regressions_from_known_failures_and_fixes() -> None:
    known = Vector("k", "cross_domain", "t", fires=("scam",), known_failure="scores 0.2")
    fixed = Vector("f", "cross_domain", "t", fires=("scam",), known_failure="scored 0.3")
    plain = Vector("p", "positive", "t", fires=("scam",))
    outcomes = [
        check(known, {"scam": 0.2}, CUTOFFS),
        check(fixed, {"scam": 0.9}, CUTOFFS),
        check(plain, {"scam": 0.1}, CUTOFFS),
    ]
    assert summarize(outcomes) == {
        "passed": 1,
        "total": 3,
        "regressions": ["p"],
        "fixed": ["f"],
        "failures": {
            "k": ["scam 0.200 (threshold 0.400) should fire"],
            "p": ["scam 0.100 (threshold 0.400) should fire"],
        },
    }


def test_the_packaged_suite_parses() -> None:
    vectors = load_vectors()
    assert len(vectors) == len({v.id for v in vectors}) >= 40
    assert {v.kind for v in vectors} == KINDS


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ({"id": "a", "kind": "positive", "text": "t"}, "needs `fires`, `fires_any` or `quiet`"),
        ({"id": "a", "kind": "rumour", "text": "t", "fires": ["scam"]}, "kind 'rumour' is not one of"),
        ({"id": "a", "kind": "positive", "text": "", "fires": ["scam"]}, "`text` must be a non-empty string"),
        ({"id": "a", "kind": "positive", "text": "t", "fires": "scam"}, "`fires` must be a list"),
        ({**GOOD, "note": 1}, "unknown fields ['note']"),
        ({**GOOD, "known_failure": ""}, "non-empty reason"),
    ],
)
def test_bad_vectors_are_refused_with_file_and_line(tmp_path: Path, line: dict, error: str) -> None:
    path = tmp_path / "vectors.jsonl"
    path.write_text("\n".join(json.dumps(v) for v in (GOOD, line)))
    with pytest.raises(ValueError, match=rf"vectors.jsonl:2: .*{re.escape(error)}"):
        load_vectors(path)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "vectors.jsonl"
    path.write_text("\n\n".join(json.dumps(v) for v in (GOOD, {**GOOD, "text": "another"})))
    with pytest.raises(ValueError, match=r"duplicate vector ids \['ok'\]"):
        load_vectors(path)


def test_regressions_are_vectors_the_serving_bundle_passes_and_the_candidate_fails(
    tiny_bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the keyword bundle (tests/tiny_bundle.py): "scam" has logit +8; a candidate whose
    calibration squeezes it to sigmoid(0.8) = 0.69 falls under scam's warn of 0.70."""
    suite = [
        Vector("scam-word", "positive", "free scam", fires=("scam",)),
        Vector("plain", "hard_negative", "hello world", quiet=("scam",)),
        Vector("missing-label", "positive", "scam", fires=("recovery_scam",)),
    ]
    monkeypatch.setattr(vectors, "load_vectors", lambda: suite)
    calibration = {**tiny_bundle.manifest.calibration, "scam": (0.1, 0.0)}
    squeezed = replace(tiny_bundle, manifest=replace(tiny_bundle.manifest, calibration=calibration))
    assert vectors.regressions(tiny_bundle, tiny_bundle) == {}
    assert vectors.regressions(tiny_bundle, squeezed) == {
        "scam-word": ["scam 0.690 (threshold 0.700) should fire"]
    }
    policy = Policy.from_file(tiny_bundle.policy_path)
    scam_at_06 = replace(policy.rules["scam"], thresholds={"warn": 0.6})
    lower = replace(policy, rules={**policy.rules, "scam": scam_at_06})
    assert vectors.regressions(tiny_bundle, squeezed, lower) == {}
