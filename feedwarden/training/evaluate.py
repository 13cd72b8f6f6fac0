"""Evaluation: per-label metrics, Janitr 3-class and TweetEval figures, release gates,
and the JSON + Markdown report with PR curves and reliability diagrams."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve

from feedwarden.policy.rules import Policy
from feedwarden.training.calibrate import expected_calibration_error
from feedwarden.training.data import Example
from feedwarden.training.views import SCAM_BUCKET, SCAM_GROUP, UMBRELLA, TaskView

THREE_CLASSES = ("scam", "topic_crypto", "clean")


@dataclass(frozen=True)
class Gate:
    """Minimum valid-set figures per tier; labels with fewer positives are not judged."""

    min_pr_auc: float
    max_fpr_ratio: float | None
    min_positives: int = 10


GATES = {
    "critical": Gate(min_pr_auc=0.5, max_fpr_ratio=2.0),
    "standard": Gate(min_pr_auc=0.3, max_fpr_ratio=3.0),
    "informational": Gate(min_pr_auc=0.3, max_fpr_ratio=None),
}


def decision_threshold(policy: Policy, label: str) -> float:
    """The threshold at which a label is reported positive: warn (safety) or badge (topic)."""
    return policy.rules[label].lowest_threshold


def binary_metrics(probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, float]:
    flagged = probs >= threshold
    positive = targets > 0.5
    tp = float((flagged & positive).sum())
    fp = float((flagged & ~positive).sum())
    fn = float((~flagged & positive).sum())
    tn = float((~flagged & ~positive).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "support": int(positive.sum()),
        "negatives": int((~positive).sum()),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
    }


def label_metrics(probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, Any]:
    metrics: dict[str, Any] = binary_metrics(probs, targets, threshold) | {"threshold": threshold}
    has_both = 0 < targets.sum() < len(targets)
    metrics["pr_auc"] = float(average_precision_score(targets, probs)) if has_both else float("nan")
    metrics["ece"] = expected_calibration_error(probs, targets)
    return metrics


def per_label(
    probs: np.ndarray, targets: np.ndarray, mask: np.ndarray, view: TaskView, policy: Policy
) -> dict[str, dict[str, Any]]:
    out = {}
    for j, label in enumerate(view.labels):
        rows = mask[:, j] > 0
        out[label] = label_metrics(probs[rows, j], targets[rows, j], decision_threshold(policy, label))
        if view.head_of(label) == "safety":
            hide = binary_metrics(probs[rows, j], targets[rows, j], policy.rules[label].thresholds["hide"])
            out[label]["hide"] = {k: hide[k] for k in ("precision", "recall", "fpr")}
    return out


def predicted_sets(probs: np.ndarray, view: TaskView, policy: Policy) -> list[set[str]]:
    thresholds = np.array([decision_threshold(policy, lab) for lab in view.labels])
    flags = probs >= thresholds
    return [{lab for lab, f in zip(view.labels, row, strict=True) if f} for row in flags]


def three_class(labels: set[str] | frozenset[str]) -> str:
    """The source project's class of a label set (raw or predicted)."""
    if labels & SCAM_GROUP:
        return "scam"
    return "topic_crypto" if "topic_crypto" in labels else "clean"


def janitr_figures(rows: Sequence[Example], predicted: Sequence[set[str]], view: TaskView) -> dict[str, Any]:
    """3-class macro-F1, scam-bucket P/R/F1/FPR and exact match on Janitr rows."""
    index = [i for i, r in enumerate(rows) if r.source == "janitr"]
    if not index:
        return {}
    released = set(view.sources["janitr"].annotates) & set(view.labels)
    truth = [three_class(rows[i].labels) for i in index]
    # The umbrella label is the scam-bucket detector when released; "any label" is
    # how the worker acts (any scam-bucket label or the umbrella reaching its threshold).
    scam_labels = {UMBRELLA} if UMBRELLA in view.labels else SCAM_BUCKET
    guess = [three_class(predicted[i] & (scam_labels | {"topic_crypto"})) for i in index]
    as_acted = [three_class(predicted[i]) for i in index]
    any_label = np.array([g == "scam" for g in as_acted], float)
    scam_truth = np.array([t == "scam" for t in truth], float)
    scam_guess = np.array([g == "scam" for g in guess], float)
    truth_sets = [rows[i].labels | ({UMBRELLA} if truth[k] == "scam" else set()) for k, i in enumerate(index)]
    exact = [truth_sets[k] & released == predicted[i] & released for k, i in enumerate(index)]
    # The anchor's label set: is it in the scam bucket, is it about crypto (both may hold).
    coarse = [
        (truth[k] == "scam", "topic_crypto" in rows[i].labels)
        == (guess[k] == "scam", "topic_crypto" in predicted[i])
        for k, i in enumerate(index)
    ]
    return {
        "rows": len(index),
        "three_class_macro_f1": float(f1_score(truth, guess, labels=list(THREE_CLASSES), average="macro")),
        "three_class_per_class_f1": dict(
            zip(
                THREE_CLASSES,
                map(float, f1_score(truth, guess, labels=list(THREE_CLASSES), average=None)),
                strict=True,
            )
        ),
        "three_class_accuracy": float(np.mean([t == g for t, g in zip(truth, guess, strict=True)])),
        "three_class_macro_f1_any_label": float(
            f1_score(truth, as_acted, labels=list(THREE_CLASSES), average="macro")
        ),
        "scam_bucket": binary_metrics(scam_guess, scam_truth, 0.5),
        "scam_bucket_any_label": binary_metrics(any_label, scam_truth, 0.5),
        "exact_match": float(np.mean(exact)),
        "exact_match_scam_crypto": float(np.mean(coarse)),
    }


def tweeteval_figures(
    rows: Sequence[Example], probs: np.ndarray, view: TaskView, policy: Policy
) -> dict[str, float]:
    """Official TweetEval metric: macro-F1 over the two classes, at the warn threshold."""
    out = {}
    for task in ("hate", "offensive"):
        index = [i for i, r in enumerate(rows) if r.source == f"tweeteval_{task}"]
        if not index or task not in view.labels:
            continue
        j = view.labels.index(task)
        truth = np.array([task in rows[i].labels for i in index])
        guess = probs[index, j] >= decision_threshold(policy, task)
        out[f"{task}_macro_f1"] = float(f1_score(truth, guess, average="macro"))
    return out


def aggregate_f1(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    tp = sum(m["tp"] for m in metrics.values())
    fp = sum(m["fp"] for m in metrics.values())
    fn = sum(m["fn"] for m in metrics.values())
    micro = 2 * tp / max(1, 2 * tp + fp + fn)
    return {"micro_f1": micro, "macro_f1": float(np.mean([m["f1"] for m in metrics.values()]))}


def check_gates(metrics: Mapping[str, Mapping[str, Any]], policy: Policy) -> dict[str, dict[str, Any]]:
    """Per-label pass/fail against its tier's gate; too few positives means not judged."""
    results: dict[str, dict[str, Any]] = {}
    for label, m in metrics.items():
        rule = policy.rules[label]
        gate = GATES[rule.tier]
        if m["support"] < gate.min_positives:
            results[label] = {"status": "not_judged", "reason": f"{m['support']} positives in valid"}
            continue
        failures = []
        if not m["pr_auc"] >= gate.min_pr_auc:
            failures.append(f"PR-AUC {m['pr_auc']:.3f} < {gate.min_pr_auc}")
        if gate.max_fpr_ratio is not None and rule.fpr_budget is not None:
            limit = rule.fpr_budget * gate.max_fpr_ratio
            if m["fpr"] > limit:
                failures.append(f"FPR {m['fpr']:.4f} > {limit:.4f}")
        results[label] = {"status": "fail" if failures else "pass", "failures": failures}
    return results


def evaluate(rows: Sequence[Example], probs: np.ndarray, view: TaskView, policy: Policy) -> dict[str, Any]:
    targets, mask = view.targets(rows)
    metrics = per_label(probs, targets, mask, view, policy)
    janitr_rows = np.array([r.source == "janitr" for r in rows])
    janitr_only = per_label(probs, targets, mask * janitr_rows[:, None], view, policy)
    predicted = predicted_sets(probs, view, policy)
    return {
        "labels": metrics,
        "labels_janitr_rows_only": {
            lab: m for lab, m in janitr_only.items() if m["support"] + m["negatives"]
        },
        "aggregate": aggregate_f1(metrics),
        "janitr": janitr_figures(rows, predicted, view),
        "tweeteval": tweeteval_figures(rows, probs, view, policy),
        "gates": check_gates(metrics, policy),
    }


def plot_label(label: str, probs: np.ndarray, targets: np.ndarray, threshold: float, dest: Path) -> None:
    """PR curve and reliability diagram for one label, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (pr_ax, rel_ax) = plt.subplots(1, 2, figsize=(9, 4))
    if 0 < targets.sum() < len(targets):
        precision, recall, _ = precision_recall_curve(targets, probs)
        pr_ax.plot(recall, precision)
        point = binary_metrics(probs, targets, threshold)
        pr_ax.scatter(
            [point["recall"]], [point["precision"]], color="red", label=f"threshold {threshold:.3f}"
        )
        pr_ax.legend(loc="lower left")
    pr_ax.set(
        title=f"{label}: precision-recall", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02)
    )
    edges = np.linspace(0, 1, 11)
    index = np.clip(np.digitize(probs, edges[1:-1]), 0, 9)
    centers = [probs[index == b].mean() for b in range(10) if (index == b).any()]
    observed = [targets[index == b].mean() for b in range(10) if (index == b).any()]
    rel_ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    rel_ax.plot(centers, observed, marker="o")
    rel_ax.set(
        title=f"{label}: reliability",
        xlabel="predicted probability",
        ylabel="observed rate",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    fig.tight_layout()
    fig.savefig(dest, dpi=80)
    plt.close(fig)


def write_report(
    dest: Path,
    results: Mapping[str, Any],
    rows: Sequence[Example],
    probs: np.ndarray,
    view: TaskView,
    policy: Policy,
) -> Path:
    """report.json, report.md and plots/<label>.png under `dest`."""
    plots = dest / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    targets, mask = view.targets(rows)
    for j, label in enumerate(view.labels):
        chosen = mask[:, j] > 0
        plot_label(
            label,
            probs[chosen, j],
            targets[chosen, j],
            decision_threshold(policy, label),
            plots / f"{label}.png",
        )
    (dest / "report.json").write_text(json.dumps(results, indent=2, default=json_default) + "\n")
    (dest / "report.md").write_text(markdown(results))
    return dest


def json_default(value: Any) -> Any:
    """numpy scalars as plain numbers, for json.dumps."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _label_table(metrics: Mapping[str, Mapping[str, Any]], gates: Mapping[str, Any]) -> list[str]:
    lines = ["| label | threshold | P | R | F1 | FPR | support | PR-AUC | ECE | gate |", "|" + " --- |" * 10]
    for label, m in metrics.items():
        lines.append(
            f"| {label} | {m['threshold']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} "
            f"| {m['fpr']:.4f} | {m['support']} | {m['pr_auc']:.3f} | {m['ece']:.3f} "
            f"| {gates[label]['status']} |"
        )
    return lines


def markdown(results: Mapping[str, Any]) -> str:
    lines = ["# feedwarden evaluation (valid)", ""]
    lines += _label_table(results["labels"], results["gates"])
    lines += ["", "Janitr rows only (no presumed-clean negatives):", ""]
    lines += _label_table(results.get("labels_janitr_rows_only", {}), results["gates"])
    lines += [
        "",
        f"micro-F1 {results['aggregate']['micro_f1']:.3f}, macro-F1 {results['aggregate']['macro_f1']:.3f}",
        "",
    ]
    janitr = results.get("janitr") or {}
    if janitr:
        scam = janitr["scam_bucket"]
        lines += [
            "## Janitr 3-class",
            "",
            f"- macro-F1 {janitr['three_class_macro_f1']:.3f}, "
            f"accuracy {janitr['three_class_accuracy']:.3f}, "
            f"exact match over {{scam bucket, topic_crypto}} {janitr['exact_match_scam_crypto']:.3f}, "
            f"over every released label {janitr['exact_match']:.3f} ({janitr['rows']} rows)",
            "- per class F1: "
            + ", ".join(f"{k} {v:.3f}" for k, v in janitr["three_class_per_class_f1"].items()),
            f"- scam bucket: P {scam['precision']:.3f} R {scam['recall']:.3f} "
            f"F1 {scam['f1']:.3f} FPR {scam['fpr']:.4f}",
            "- scam bucket, any scam-bucket label firing (as the worker acts): "
            + ", ".join(
                f"{k} {janitr['scam_bucket_any_label'][k]:.3f}" for k in ("precision", "recall", "f1", "fpr")
            )
            + f"; 3-class macro-F1 with it {janitr['three_class_macro_f1_any_label']:.3f}",
            "",
        ]
    if results.get("tweeteval"):
        lines += ["## TweetEval", ""] + [f"- {k}: {v:.3f}" for k, v in results["tweeteval"].items()] + [""]
    if results.get("regression_vectors"):
        lines += _vector_lines(results["regression_vectors"])
    if results.get("functional_hate"):
        lines += _functional_lines(results["functional_hate"])
    for key in ("int8_parity", "timings", "sizes"):
        if key in results:
            lines += [
                f"## {key}",
                "",
                "```",
                json.dumps(results[key], indent=2, default=json_default),
                "```",
                "",
            ]
    lines += ["Plots: `plots/<label>.png` (precision-recall and reliability).", ""]
    return "\n".join(lines)


def _vector_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Regression vectors",
        "",
        f"- {summary['passed']} of {summary['total']} pass",
        f"- failing and not known failures (a release refuses them): {summary['regressions'] or 'none'}",
        f"- known failures that now pass (drop their `known_failure`): {summary['fixed'] or 'none'}",
        "",
    ]
    lines += [f"- `{vid}`: " + "; ".join(problems) for vid, problems in summary["failures"].items()]
    return lines + [""]


def _functional_lines(report: Mapping[str, Any]) -> list[str]:
    overall = report["overall"]

    def flagged(fig: Mapping[str, float]) -> str:
        return f"{fig['recall']:.2f}" if "recall" in fig else f"{fig['fpr']:.2f}"

    lines = [
        "## Functional test of hate speech (templates x target groups, `training/functional.py`)",
        "",
        f"- {overall['cases']} cases; `hate` acts: "
        + ", ".join(f"{k} {v:.3f}" for k, v in overall["hate"].items())
        + "; `hate` or `offensive` acts: "
        + ", ".join(f"{k} {v:.3f}" for k, v in overall["hate_or_offensive"].items()),
        "",
        "| functionality | hateful | share flagged: hate | hate or offensive |",
        "| --- | --- | --- | --- |",
    ]
    for name, block in report["by_functionality"].items():
        hateful = "recall" in block["hate"]
        lines.append(
            f"| {name} | {'yes' if hateful else 'no'} | {flagged(block['hate'])} | "
            f"{flagged(block['hate_or_offensive'])} |"
        )
    lines += [
        "",
        "| group | recall: hate | hate or offensive | FPR: hate | hate or offensive |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, block in report["by_group"].items():
        hate, either = block["hate"], block["hate_or_offensive"]
        cells = (hate["recall"], either["recall"], hate["fpr"], either["fpr"])
        lines.append(f"| {name} | " + " | ".join(f"{value:.2f}" for value in cells) + " |")
    return lines + [""]
