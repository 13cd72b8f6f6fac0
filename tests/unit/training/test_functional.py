"""The templated functional test of hate speech: its figures, exact, and a run on the keyword bundle."""

from __future__ import annotations

import numpy as np
import pytest

from feedwarden.models.bundle import Bundle
from feedwarden.training.functional import GROUPS, TEMPLATES, cases, figures, functional_report


def test_figures_count_recall_fpr_and_the_flag_everything_bar() -> None:
    hateful = np.array([True, True, True, False, False])
    flagged = np.array([True, False, True, True, False])
    result = figures(hateful, flagged)
    assert result["recall"] == pytest.approx(2 / 3) and result["fpr"] == 0.5
    assert result["accuracy"] == 0.6 and result["flag_all_accuracy"] == 0.6
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert set(figures(hateful[:3], flagged[:3])) == {"accuracy", "flag_all_accuracy", "recall"}


def test_every_template_meets_every_group() -> None:
    posts = {template.post(group) for template, group in cases()}
    assert len(posts) == len(TEMPLATES) * len(GROUPS)
    assert "Disabled people should all be locked up." in posts


def test_the_keyword_bundle_flags_only_the_word_hate(tiny_bundle: Bundle) -> None:
    """tests/tiny_bundle.py fires hate and offensive on the word "hate" alone: the explicit
    template, its spaced spelling ("I h a t e {G}.", read as "I hate") and one negation
    ("I don't hate {G}.") are flagged, for every group."""
    report = functional_report(tiny_bundle)
    assert report is not None
    by = report["by_functionality"]
    assert by["explicit_hate"]["hate"]["recall"] == 1.0 and by["obfuscated"]["hate"]["recall"] == 0.5
    assert by["derogation"]["hate"]["recall"] == 0.0
    assert by["negation"]["hate"]["fpr"] == 0.5 and by["counter_speech"]["hate"]["fpr"] == 0.0
    hateful = sum(t.hateful for t in TEMPLATES)
    overall = report["overall"]["hate_or_offensive"]
    assert overall["recall"] == pytest.approx(2 / hateful)
    assert overall["fpr"] == pytest.approx(1 / (len(TEMPLATES) - hateful))
    per_group = {g: b["hate"]["recall"] for g, b in report["by_group"].items()}
    assert per_group == pytest.approx(dict.fromkeys(GROUPS, 2 / hateful))
