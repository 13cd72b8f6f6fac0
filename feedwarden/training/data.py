"""Labelled datasets: JSONL loading with schema checks, duplicates and cross-split leakage.

Rows keep the source's full taxonomy (`labels` are raw label names); which of
them feed which head is decided later by a task view (`training.views`).
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class DatasetError(ValueError):
    """A data file is missing or a row breaks the schema."""


@dataclass(frozen=True)
class Example:
    """One labelled post. `source` names the dataset, which fixes what it annotates."""

    id: str
    text: str
    labels: frozenset[str]
    source: str
    split: str
    synthetic: bool = False
    meta: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)


SYNTHETIC_ID = re.compile(r"^(scam_batch|clean_batch|x_mock)_")


def data_root() -> Path:
    """`FEEDWARDEN_DATA`, else `<repo>/../shared/data`."""
    env = os.environ.get("FEEDWARDEN_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_jsonl(path: Path, source: str, split: str, label_field: str = "labels") -> list[Example]:
    """Read a JSONL file; every row needs a string `id`, non-empty string `text` and a
    list of string labels under `label_field`. Errors name the file and line."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such data file")
    rows: list[Example] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                rows.append(_parse_row(line, f"{path}:{number}", source, split, label_field))
    return rows


def _parse_row(line: str, where: str, source: str, split: str, label_field: str) -> Example:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not JSON ({exc.msg})") from exc
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: row is {type(raw).__name__}, expected an object")
    row_id, text, labels = raw.get("id"), raw.get("text"), raw.get(label_field)
    if not isinstance(row_id, str) or not row_id:
        raise DatasetError(f"{where}: `id` must be a non-empty string, got {row_id!r}")
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{where}: `text` of row {row_id} must be a non-empty string")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise DatasetError(f"{where}: `{label_field}` of row {row_id} must be a list of strings")
    source_id = str(raw.get("source_id") or row_id)
    meta = {k: v for k, v in raw.items() if k not in {"id", "text", label_field}}
    return Example(
        id=row_id,
        text=text,
        labels=frozenset(labels),
        source=source,
        split=split,
        synthetic=bool(SYNTHETIC_ID.match(source_id)),
        meta=meta,
    )


_URL = re.compile(r"https?://\S+")
_MENTION = re.compile(r"@\w+")
_NON_WORD = re.compile(r"[^\w]+")


def normalize_text(text: str) -> str:
    """The key for near-duplicate detection: case, accents, URLs, mentions,
    punctuation and whitespace are ignored."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _MENTION.sub(" ", _URL.sub(" ", text))
    return _NON_WORD.sub(" ", text).strip()


@dataclass(frozen=True)
class LeakageReport:
    duplicates_within: Mapping[str, int]
    cross_split: Mapping[tuple[str, str], int]
    conflicting_labels: int

    def to_dict(self) -> dict[str, object]:
        return {
            "duplicates_within_split": dict(self.duplicates_within),
            "cross_split": {f"{a}/{b}": n for (a, b), n in sorted(self.cross_split.items())},
            "duplicate_groups_with_conflicting_labels": self.conflicting_labels,
        }


def find_leakage(splits: Mapping[str, Sequence[Example]]) -> LeakageReport:
    """Count near-duplicate texts inside each split and shared between splits."""
    groups: dict[str, list[Example]] = defaultdict(list)
    for rows in splits.values():
        for row in rows:
            groups[normalize_text(row.text)].append(row)
    within: dict[str, int] = defaultdict(int)
    cross: dict[tuple[str, str], int] = defaultdict(int)
    conflicting = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        names = sorted({m.split for m in members})
        for name in names:
            extra = sum(m.split == name for m in members) - 1
            if extra:
                within[name] += extra
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                cross[(a, b)] += 1
        conflicting += len({m.labels for m in members}) > 1
    return LeakageReport(dict(within), dict(cross), conflicting)


def deduplicate(rows: Iterable[Example]) -> list[Example]:
    """Keep the first row of each near-duplicate group."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = normalize_text(row.text)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def drop_overlap(rows: Iterable[Example], protected: Iterable[Example]) -> list[Example]:
    """Rows whose text does not also occur (near-duplicate) in `protected`."""
    taken = {normalize_text(r.text) for r in protected}
    return [r for r in rows if normalize_text(r.text) not in taken]
