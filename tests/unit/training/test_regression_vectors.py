"""The released default bundle must pass the hand-written regression vectors:
positives, hard negatives, multi-label co-detection, obfuscated abuse, spam and
scams written for other platforms and media (SMS, email, comments), and
functional tests of hate speech (implicit derogation, negation, counter-speech,
rare targets)."""

from __future__ import annotations

import pytest

from feedwarden.models.bundle import default_bundle_path, load_bundle
from feedwarden.training.vectors import Outcome, Vector, load_vectors, run_vectors

VECTORS = load_vectors()


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    if not (default_bundle_path() / "manifest.json").is_file():
        pytest.skip("no released default bundle at feedwarden/models/default")
    return {o.vector.id: o for o in run_vectors(load_bundle(default_bundle_path()), VECTORS)}


def _case(vector: Vector) -> object:
    """Known failures of the released bundle stay visible as xfail, with their reason."""
    marks = [pytest.mark.xfail(reason=vector.known_failure, strict=False)] if vector.known_failure else []
    return pytest.param(vector, id=vector.id, marks=marks)


@pytest.mark.parametrize("vector", [_case(v) for v in VECTORS])
def test_vector(vector: Vector, outcomes: dict[str, Outcome]) -> None:
    assert outcomes[vector.id].passed, "; ".join(outcomes[vector.id].problems)
