"""Evaluate any released or candidate bundle through the serving engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feedwarden.models.bundle import load_bundle
from feedwarden.models.engine import Engine
from feedwarden.policy.rules import Policy
from feedwarden.training.config import PipelineConfig
from feedwarden.training.corpus import load_corpus
from feedwarden.training.evaluate import evaluate, write_report
from feedwarden.training.functional import functional_report
from feedwarden.training.vectors import load_vectors, run_vectors, summarize
from feedwarden.training.views import TaskView


def evaluate_bundle(path: Path, data: Path, out: Path) -> Path:
    """Score the validation set and the regression vectors with the bundle's own graph,
    calibration and policy."""
    bundle = load_bundle(path)
    manifest = bundle.manifest
    view = TaskView(safety=manifest.head("safety").labels, topic=manifest.head("topic").labels)
    policy = Policy.from_file(bundle.policy_path)
    corpus = load_corpus(data, PipelineConfig(max_length=manifest.max_length))
    scores = Engine(bundle, providers="cpu").score([row.text for row in corpus.valid])
    labels, probs = scores.flat()
    if labels != view.labels:
        raise ValueError(f"engine label order {labels} differs from the manifest's {view.labels}")
    results = evaluate(corpus.valid, np.asarray(probs), view, policy)
    results["bundle"] = {"version": bundle.version, "path": str(path)}
    results["regression_vectors"] = summarize(run_vectors(bundle, load_vectors()))
    results["functional_hate"] = functional_report(bundle)
    write_report(out, results, corpus.valid, np.asarray(probs), view, policy)
    return out / "report.md"
