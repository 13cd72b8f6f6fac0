from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedwarden.training.data import (
    DatasetError,
    Example,
    deduplicate,
    drop_overlap,
    find_leakage,
    load_jsonl,
    normalize_text,
)


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_loader_keeps_full_taxonomy_and_flags_synthetic(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "a.jsonl",
        [
            {"id": "1", "text": "hi", "labels": ["clean", "topic_travel"]},
            {"id": "2", "text": "win", "labels": ["scam"], "source_id": "scam_batch_7"},
        ],
    )
    rows = load_jsonl(path, "janitr", "train")
    assert rows[0].labels == frozenset({"clean", "topic_travel"})
    assert [r.synthetic for r in rows] == [False, True]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"id": "", "text": "x", "labels": []}), "`id`"),
        (json.dumps({"id": "1", "text": " ", "labels": []}), "`text`"),
        (json.dumps({"id": "1", "text": "x", "labels": "scam"}), "list of strings"),
        (json.dumps([1, 2]), "expected an object"),
    ],
)
def test_schema_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"id": "ok", "text": "fine", "labels": []}, line])
    with pytest.raises(DatasetError, match=message) as info:
        load_jsonl(path, "janitr", "train")
    assert "bad.jsonl:2" in str(info.value)


def _ex(text: str, split: str, labels: set[str] | None = None) -> Example:
    return Example(id=text, text=text, labels=frozenset(labels or set()), source="janitr", split=split)


def test_near_duplicates_ignore_case_urls_mentions_and_punctuation() -> None:
    assert normalize_text("Hello @bob, WORLD!! https://t.co/x") == normalize_text("hello world")


def test_leakage_report_counts_within_and_cross_split() -> None:
    splits = {
        "train": [_ex("A b", "train"), _ex("a B!", "train", {"scam"}), _ex("c", "train")],
        "valid": [_ex("a b", "valid"), _ex("d", "valid")],
    }
    report = find_leakage(splits)
    assert report.duplicates_within == {"train": 1}
    assert report.cross_split == {("train", "valid"): 1}
    assert report.conflicting_labels == 1


def test_dedup_and_overlap_removal() -> None:
    rows = [_ex("x y", "train"), _ex("X Y", "train"), _ex("z", "train")]
    assert [r.text for r in deduplicate(rows)] == ["x y", "z"]
    assert [r.text for r in drop_overlap(rows, [_ex("z!", "valid")])] == ["x y", "X Y"]
