"""Janitr figures on four hand-made rows, exact to the row."""

from __future__ import annotations

import pytest

from feedwarden.training.data import Example
from feedwarden.training.evaluate import janitr_figures, three_class
from feedwarden.training.views import TaskView

VIEW = TaskView(safety=("scam", "spam", "scam_or_spam"), topic=("topic_crypto",))


def _row(i: int, *labels: str) -> Example:
    return Example(f"r{i}", f"text {i}", frozenset(labels), "janitr", "valid")


def test_three_class_prefers_the_scam_bucket_over_crypto() -> None:
    assert three_class(frozenset({"phishing", "topic_crypto"})) == "scam"
    assert three_class(frozenset({"topic_crypto"})) == "topic_crypto"
    assert three_class(frozenset({"topic_news"})) == "clean"


def test_janitr_figures_count_each_row_once() -> None:
    rows = [_row(0, "scam", "topic_crypto"), _row(1, "topic_crypto"), _row(2), _row(3, "spam")]
    predicted = [
        {"scam", "scam_or_spam", "topic_crypto"},  # exactly right
        {"scam_or_spam", "topic_crypto"},  # a false scam-bucket flag
        set(),  # right
        {"spam"},  # right label, but the umbrella stayed below its threshold
    ]
    figures = janitr_figures(rows, predicted, VIEW)
    assert figures["rows"] == 4
    assert figures["three_class_accuracy"] == pytest.approx(2 / 4)
    bucket = figures["scam_bucket"]
    assert (bucket["tp"], bucket["fp"], bucket["fn"]) == (1, 1, 1)
    any_label = figures["scam_bucket_any_label"]
    assert (any_label["tp"], any_label["fp"], any_label["fn"]) == (2, 1, 0)
    # {scam bucket, crypto}: rows 0 and 2 agree; row 1 adds scam, row 3 misses it.
    assert figures["exact_match_scam_crypto"] == pytest.approx(2 / 4)
    # every released label: row 3 lacks the umbrella, row 1 has a spurious one.
    assert figures["exact_match"] == pytest.approx(2 / 4)
    # 3-class: scam by the umbrella (row 3 reads as clean) or by any bucket label (as the worker acts).
    assert figures["three_class_macro_f1"] == pytest.approx((1 / 2 + 0 + 2 / 3) / 3)
    assert figures["three_class_macro_f1_any_label"] == pytest.approx((4 / 5 + 0 + 1) / 3)
