"""Recalibrate a serving bundle: base-rate calibration set -> Platt + thresholds -> gates.

Data discipline: thresholds and Platt parameters are fitted on the corpus's
calib split only (Janitr calib, TweetEval's calib carve-out of train, and
presumed-clean fill), and the release gates are judged on its valid split
(Janitr valid, TweetEval val, TweetTopic validation, presumed-clean fill) —
the same splits the training pipeline uses. The data directory has no test
split, and none would be read. Moderator verdicts join one side or the other
by a hash of the post id (`training.feedback.half`).

The Janitr + presumed-clean part of each split is the corpus's, at a
realistic base rate (`clean_share` of its rows carry no safety label); the
verdict rows join it with their own presumed-clean fill at the same rate, so
the part stays at the base rate and no corpus row is dropped. Drift references are measured on the calib part
without verdicts (reviewed posts are not a sample of the stream).

Platt parameters, thresholds, tiers and FPR budgets are the training
pipeline's (`pipeline.fit_policy`), so a recalibration and a fresh training
run on the same data agree. Which labels have rules comes from the serving
policy; a label without both positive and negative calib rows keeps its
serving calibration and rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from feedwarden.models.bundle import Bundle, Manifest, Reference
from feedwarden.models.engine import Engine
from feedwarden.policy.rules import Policy
from feedwarden.training.config import PipelineConfig
from feedwarden.training.corpus import load_corpus
from feedwarden.training.data import Example
from feedwarden.training.evaluate import evaluate
from feedwarden.training.feedback import with_feedback_sources
from feedwarden.training.mixing import base_rate_set
from feedwarden.training.pipeline import REFERENCE_SOURCES, apply_calibration, fit_policy, references_of
from feedwarden.training.views import SCAM_BUCKET, TaskView

PRESUMED = "presumed_clean"
# Loading the corpus at this clean share picks (nearly) every presumed-clean row.
HEADROOM_SHARE = 0.99
_RECAL_SUFFIX = re.compile(r"(-r\d{8}T\d{6}Z)+$")
_KEEP_METRICS = ("threshold", "precision", "recall", "f1", "fpr", "support", "pr_auc", "ece")


@dataclass(frozen=True)
class Pools:
    """Labelled rows: `calib` tunes, `valid` judges the gates."""

    calib: list[Example]
    valid: list[Example]


def load_pools(data: Path, config: PipelineConfig) -> Pools:
    """The training corpus's calib and valid splits at `config.calib_clean_share`."""
    corpus = load_corpus(data, config)
    return Pools(corpus.calib, corpus.valid)


def spare_presumed(data: Path, config: PipelineConfig, used: Pools) -> Pools:
    """The presumed-clean rows the corpus did not pick at the requested base rate:
    fill that keeps verdict rows at the base rate too."""
    every = load_pools(data, replace(config, calib_clean_share=HEADROOM_SHARE, eval_rows=None))
    taken = {r.id for r in used.calib + used.valid}
    calib, valid = (
        [r for r in rows if r.source == PRESUMED and r.id not in taken] for rows in (every.calib, every.valid)
    )
    return Pools(calib, valid)


def is_flagged(row: Example, safety: Sequence[str]) -> bool:
    """Whether a row carries any safety label (raw scam-bucket names count too)."""
    return bool(row.labels & (SCAM_BUCKET | set(safety)))


def with_verdicts(
    rows: Sequence[Example],
    verdicts: Sequence[Example],
    spare: Sequence[Example],
    safety: Sequence[str],
    clean_share: float,
    seed: int,
) -> list[Example]:
    """`rows` (already at the base rate) plus the verdict rows and enough `spare` presumed-clean
    rows that the added part is at `clean_share` too. The corpus rows are never dropped; if
    `spare` runs short, verdict positives are subsampled (`mixing.base_rate_set`)."""
    if not verdicts:
        return list(rows)
    added = base_rate_set(verdicts, spare, lambda r: is_flagged(r, safety), clean_share, seed)
    return list(rows) + added


def clean_share_of(rows: Sequence[Example], safety: Sequence[str]) -> float:
    """The clean share of the base-rate part (Janitr, presumed clean, verdicts)."""
    part = [r for r in rows if r.source in REFERENCE_SOURCES or r.source.startswith("feedback/")]
    return 1.0 - sum(is_flagged(r, safety) for r in part) / max(1, len(part))


def version_name(serving: str, now: datetime) -> str:
    """`<base>-r<UTC timestamp>`; an earlier recalibration suffix is replaced, not stacked."""
    return f"{_RECAL_SUFFIX.sub('', serving)}-r{now.strftime('%Y%m%dT%H%M%SZ')}"


def view_of(manifest: Manifest, rows: Sequence[Example]) -> TaskView:
    view = TaskView(safety=manifest.head("safety").labels, topic=manifest.head("topic").labels)
    return with_feedback_sources(view, rows)


def raw_logits(engine: Engine, rows: Sequence[Example], view: TaskView) -> np.ndarray:
    labels, logits = engine.logits([r.text for r in rows]).flat()
    if labels != view.labels:
        raise ValueError(f"engine label order {labels} differs from the manifest's {view.labels}")
    return np.asarray(logits, np.float32)


@dataclass(frozen=True)
class Candidate:
    """A recalibrated bundle-to-be and its evaluation on the gate set."""

    calibration: dict[str, tuple[float, float]]
    policy: Policy
    references: dict[str, Reference]
    results: dict[str, Any]
    thresholds: dict[str, Any]
    kept: tuple[str, ...] = field(default=())

    @property
    def failures(self) -> dict[str, list[str]]:
        gates = self.results["gates"]
        return {label: g["failures"] for label, g in gates.items() if g["status"] == "fail"}


def recalibrate(
    bundle: Bundle,
    serving_policy: Policy,
    calib_logits: np.ndarray,
    pools: Pools,
    view: TaskView,
    version: str,
    config: PipelineConfig,
) -> tuple[dict[str, tuple[float, float]], Policy, dict[str, Any], tuple[str, ...]]:
    """The training pipeline's Platt fit and thresholds (`fit_policy`) on calib, for the
    labels the serving policy has rules for; a label without both positive and negative
    calib rows keeps its serving calibration and rule."""
    targets, mask = view.targets(pools.calib)
    fitted, fresh, info = fit_policy(calib_logits, pools.calib, view, config)
    usable = {lab for j, lab in enumerate(view.labels) if _both_classes(targets[:, j], mask[:, j])}
    calibration = {
        lab: fitted[lab] if lab in usable else bundle.manifest.calibration[lab] for lab in view.labels
    }
    rules = {
        label: fresh.rules[label] if label in usable else rule for label, rule in serving_policy.rules.items()
    }
    kept = tuple(sorted(set(serving_policy.rules) - usable))
    return calibration, Policy(version, rules), {lab: info[lab] for lab in rules if lab in usable}, kept


def _both_classes(targets: np.ndarray, mask: np.ndarray) -> bool:
    annotated = targets[mask > 0]
    return 0 < annotated.sum() < len(annotated)


def build_references(
    probs: np.ndarray,
    rows: Sequence[Example],
    view: TaskView,
    policy: Policy,
    serving: Mapping[str, Reference],
) -> dict[str, Reference]:
    """Per ruled label, the score distribution on calib's base-rate rows (no verdicts),
    built as the training pipeline builds it (`pipeline.references_of`, on
    `drift.REFERENCE_EDGES`); the serving references if calib has no base-rate row.

    The serving bundle's edges are not kept: the worker keys its window tables by bundle
    version, so the new version's windows are binned on the new edges from the start, and
    the released bundle's equal 0.05 bins are too coarse for the prevalence estimate."""
    return references_of(probs, rows, view, policy) or dict(serving)


def judge(
    logits: np.ndarray,
    rows: Sequence[Example],
    view: TaskView,
    calibration: Mapping[str, tuple[float, float]],
    policy: Policy,
) -> dict[str, Any]:
    """`evaluate` (metrics and gates) over the labels the policy has rules for."""
    ruled = [j for j, lab in enumerate(view.labels) if lab in policy.rules]
    sub = TaskView(
        safety=tuple(lab for lab in view.safety if lab in policy.rules),
        topic=tuple(lab for lab in view.topic if lab in policy.rules),
        sources=view.sources,
    )
    probs = apply_calibration(logits, view, dict(calibration))
    return evaluate(rows, probs[:, ruled], sub, _with_hide(policy))


def _with_hide(policy: Policy) -> Policy:
    """`evaluate` reports hide metrics for every safety rule; a hand-written rule without a
    hide action is measured at its most severe threshold instead (gates do not use it)."""
    rules = {
        label: replace(rule, thresholds={**rule.thresholds, "hide": max(rule.thresholds.values())})
        if rule.head == "safety" and "hide" not in rule.thresholds
        else rule
        for label, rule in policy.rules.items()
    }
    return Policy(policy.version, rules)


def candidate(
    bundle: Bundle,
    serving_policy: Policy,
    engine: Engine,
    pools: Pools,
    version: str,
    config: PipelineConfig,
) -> tuple[Candidate, dict[str, Any]]:
    """The recalibrated candidate, and the serving bundle's results on the same gate set."""
    view = view_of(bundle.manifest, pools.calib + pools.valid)
    calib_logits = raw_logits(engine, pools.calib, view)
    valid_logits = raw_logits(engine, pools.valid, view)
    calibration, policy, info, kept = recalibrate(
        bundle, serving_policy, calib_logits, pools, view, version, config
    )
    probs = apply_calibration(calib_logits, view, calibration)
    references = build_references(probs, pools.calib, view, policy, bundle.manifest.reference)
    results = judge(valid_logits, pools.valid, view, calibration, policy)
    before = judge(valid_logits, pools.valid, view, bundle.manifest.calibration, serving_policy)
    return Candidate(calibration, policy, references, results, info, kept), before


def manifest_metrics(
    results: Mapping[str, Any], serving: Manifest, extra: Mapping[str, Any], config: PipelineConfig
) -> dict[str, Any]:
    """What the new manifest records: gate-set figures, the graph's variant/parity, the
    corpus settings (for the next recalibration) and provenance."""
    carried = {k: serving.metrics[k] for k in ("variant", "int8_parity") if k in serving.metrics}
    return json_safe(
        carried
        | {
            "split": "valid",
            "labels": {lab: {k: m[k] for k in _KEEP_METRICS} for lab, m in results["labels"].items()},
            "aggregate": results["aggregate"],
            "janitr": results["janitr"],
            "tweeteval": results["tweeteval"],
            "gates": {lab: g["status"] for lab, g in results["gates"].items()},
            "recalibration": dict(extra),
            "config": config.to_dict(),
        }
    )


def json_safe(value: Any) -> Any:
    """Plain JSON: numpy scalars as Python numbers, NaN/inf as null."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
