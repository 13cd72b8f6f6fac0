"""The training corpus: every source loaded, cleaned of leakage and split.

Decisions, applied here and reported:
- Janitr's written-looking rows (`scam_batch_*`, `clean_batch_*`, `x_mock_*`
  source ids) stay in train but are left out of valid and calib, which should
  measure real posts.
- A text in more than one split is removed from train (and from calib when it
  is also in valid): evaluation rows are never trained or tuned on.
- TweetEval train is split (label-stratified) into train and a calibration
  part; its official val split is the validation set. Davidson is training
  data only, except that its held-out "neither" rows (and TweetEval calib/val
  negatives) act as presumed-clean posts bringing calib and valid to a
  realistic base rate for the scam/spam labels.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from feedwarden.training.config import PipelineConfig
from feedwarden.training.data import (
    Example,
    deduplicate,
    drop_overlap,
    find_leakage,
    load_jsonl,
)
from feedwarden.training.mixing import base_rate_set
from feedwarden.training.splits import cooccurrence_split, divergence
from feedwarden.training.views import SCAM_BUCKET


@dataclass
class Corpus:
    train: list[Example]
    valid: list[Example]
    calib: list[Example]
    report: dict[str, Any] = field(default_factory=dict)


def load_corpus(root: Path, config: PipelineConfig) -> Corpus:
    rng = random.Random(config.seed)
    janitr = {s: load_jsonl(root / "janitr" / f"{s}.jsonl", "janitr", s) for s in ("train", "valid", "calib")}
    report: dict[str, Any] = {"janitr_leakage": find_leakage(janitr).to_dict()}
    j_valid = [r for r in janitr["valid"] if not r.synthetic]
    j_calib = drop_overlap([r for r in janitr["calib"] if not r.synthetic], j_valid)
    j_train = deduplicate(drop_overlap(janitr["train"], janitr["valid"] + janitr["calib"]))
    if config.janitr_rows is not None:
        j_train = rng.sample(j_train, min(config.janitr_rows, len(j_train)))
    report["janitr"] = {
        "train": len(j_train),
        "valid": len(j_valid),
        "calib": len(j_calib),
        "synthetic_rows_in_train": sum(r.synthetic for r in j_train),
        "synthetic_rows_excluded_from_eval": sum(r.synthetic for r in janitr["valid"] + janitr["calib"]),
    }
    hate = _tweeteval(root, "hate", config.hate_train_rows, config, report)
    offensive = _tweeteval(root, "offensive", config.offensive_train_rows, config, report)
    davidson_all = load_jsonl(root / "davidson" / "davidson.jsonl", "davidson", "train")
    davidson_all = drop_overlap(davidson_all, hate["valid"] + offensive["valid"])
    rng.shuffle(davidson_all)
    davidson = davidson_all[: config.davidson_train_rows]
    topic = {
        s: load_jsonl(root / "tweettopic" / f"en_{f}.jsonl", "tweettopic", s, label_field="topics")
        for s, f in (("train", "train"), ("valid", "validation"))
    }
    spare_clean = [r for r in davidson_all[config.davidson_train_rows :] if not r.labels]
    calib_pool = _presumed_clean(
        [r for r in hate["calib"] + offensive["calib"] if not r.labels] + spare_clean[: len(spare_clean) // 2]
    )
    valid_pool = _presumed_clean(
        [r for r in hate["valid"] + offensive["valid"] if not r.labels] + spare_clean[len(spare_clean) // 2 :]
    )
    calib_base = base_rate_set(j_calib, calib_pool, _is_scam_bucket, config.calib_clean_share, config.seed)
    valid_base = base_rate_set(j_valid, valid_pool, _is_scam_bucket, config.calib_clean_share, config.seed)
    corpus = Corpus(
        train=j_train + hate["train"] + offensive["train"] + davidson + topic["train"],
        valid=_unique_presumed(valid_base, j_valid) + hate["valid"] + offensive["valid"] + topic["valid"],
        calib=_unique_presumed(calib_base, j_calib) + hate["calib"] + offensive["calib"],
        report=report,
    )
    if config.eval_rows is not None:
        corpus.valid = _subsample(corpus.valid, config.eval_rows, rng)
        corpus.calib = _subsample(corpus.calib, config.eval_rows, rng)
    report["rows"] = {"train": len(corpus.train), "valid": len(corpus.valid), "calib": len(corpus.calib)}
    report["presumed_clean"] = {
        "calib": sum(r.source == "presumed_clean" for r in corpus.calib),
        "valid": sum(r.source == "presumed_clean" for r in corpus.valid),
    }
    return corpus


def _subsample(rows: list[Example], size: int, rng: random.Random) -> list[Example]:
    """At most `size` rows, order kept (tiny runs)."""
    if len(rows) <= size:
        return rows
    keep = set(rng.sample(range(len(rows)), size))
    return [row for i, row in enumerate(rows) if i in keep]


def _is_scam_bucket(row: Example) -> bool:
    return bool(row.labels & SCAM_BUCKET)


def _unique_presumed(base: Sequence[Example], janitr: Sequence[Example]) -> list[Example]:
    """The Janitr rows (all of them, at any base rate) plus the presumed-clean rows chosen."""
    return list(janitr) + [r for r in base if r.source == "presumed_clean"]


def _presumed_clean(rows: Sequence[Example]) -> list[Example]:
    unique = deduplicate(rows)
    return [replace(r, source="presumed_clean", id=f"presumed:{r.id}", labels=frozenset()) for r in unique]


def _tweeteval(
    root: Path, task: str, train_rows: int, config: PipelineConfig, report: dict[str, Any]
) -> dict[str, list[Example]]:
    source = f"tweeteval_{task}"
    train = load_jsonl(root / "tweeteval" / f"{task}_train.jsonl", source, "train")
    valid = load_jsonl(root / "tweeteval" / f"{task}_val.jsonl", source, "valid")
    train = deduplicate(drop_overlap(train, valid))
    calib_share = config.tweeteval_calib_rows / len(train)
    train_share = min(train_rows / len(train), 1.0 - calib_share)
    rest = max(0.0, 1.0 - calib_share - train_share)
    fractions = {"train": train_share, "calib": calib_share} | ({"unused": rest} if rest > 0 else {})
    parts = cooccurrence_split(train, lambda r: r.labels, fractions, config.seed)
    report[source] = {
        "split_divergence": divergence(train, parts, lambda r: r.labels),
        "valid": len(valid),
    }
    return {"train": parts["train"], "calib": parts["calib"], "valid": valid}
