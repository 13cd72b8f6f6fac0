from __future__ import annotations

import numpy as np

from feedwarden.training.data import Example
from feedwarden.training.views import TaskView, select_view


def _row(source: str, labels: set[str], i: int = 0) -> Example:
    return Example(
        id=f"{source}-{i}", text=f"text {i}", labels=frozenset(labels), source=source, split="train"
    )


VIEW = TaskView(safety=("scam", "spam", "hate", "offensive"), topic=("topic_crypto", "topic_sports"))
UMBRELLA_VIEW = TaskView(safety=("scam", "promo", "scam_or_spam"), topic=("topic_crypto",))


def test_masks_cover_only_what_a_source_annotates() -> None:
    rows = [
        _row("janitr", {"scam", "topic_crypto"}),
        _row("tweeteval_hate", {"hate"}),
        _row("tweeteval_offensive", set()),
        _row("davidson", {"hate"}),
        _row("tweettopic", {"sports"}),
    ]
    y, mask = VIEW.targets(rows)
    assert VIEW.labels == ("scam", "spam", "hate", "offensive", "topic_crypto", "topic_sports")
    np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 1, 1])  # presumed not hate/offensive
    np.testing.assert_array_equal(y[0], [1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(mask[1], [0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(y[1], [0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(mask[2], [0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(y[2], [0, 0, 0, 0, 0, 0])
    # Davidson hate is also offensive.
    np.testing.assert_array_equal(mask[3], [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(y[3], [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(mask[4], [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(y[4], [0, 0, 0, 0, 0, 1])


def test_presumed_clean_rows_are_negatives_for_scam_labels_only() -> None:
    y, mask = VIEW.targets([_row("presumed_clean", set())])
    np.testing.assert_array_equal(mask[0], [1, 1, 0, 0, 0, 0])
    assert y.sum() == 0


def test_labels_below_minimum_support_are_not_released() -> None:
    rows = [_row("janitr", {"scam"}, i) for i in range(5)] + [_row("janitr", {"spam"}, 9)]
    rows += [_row("tweeteval_hate", {"hate"}, i) for i in range(5)]
    view, dropped = select_view(rows, min_support=3)
    assert view.safety == ("scam", "hate", "scam_or_spam")
    assert dropped["spam"] == 1
    assert "topic_crypto" in dropped


def test_umbrella_label_pools_every_scam_bucket_label() -> None:
    rows = [
        _row("janitr", {"promo"}),
        _row("janitr", {"giveaway"}),
        _row("janitr", {"clean", "topic_crypto"}),
    ]
    y, mask = UMBRELLA_VIEW.targets(rows)
    np.testing.assert_array_equal(y, [[0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert mask.min() == 1


def test_janitr_presumption_is_void_for_abuse_adjacent_rows() -> None:
    _, mask = VIEW.targets([_row("janitr", {"profanity"})])
    np.testing.assert_array_equal(mask[0], [1, 1, 0, 0, 1, 1])
