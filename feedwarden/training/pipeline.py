"""The training pipeline: corpus -> mix -> fine-tune -> ONNX (fp32, int8) -> parity gate
-> Platt + thresholds on calib -> evaluate on valid -> candidate bundle."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binom

from feedwarden.drift.stats import REFERENCE_EDGES, reference_from_scores
from feedwarden.models.bundle import Bundle, Head, Manifest, Reference, write_bundle
from feedwarden.policy.rules import Policy, Rule
from feedwarden.training import calibrate as cal
from feedwarden.training.config import PipelineConfig
from feedwarden.training.corpus import Corpus, load_corpus
from feedwarden.training.data import Example
from feedwarden.training.evaluate import evaluate, json_default, write_report
from feedwarden.training.functional import functional_report
from feedwarden.training.vectors import load_vectors, run_vectors, summarize
from feedwarden.training.views import (
    DEFAULT_FPR_BUDGET,
    FPR_BUDGETS,
    HIDE_FPR_BUDGETS,
    SCAM_GROUP,
    TIERS,
    TaskView,
    select_view,
)

log = logging.getLogger(__name__)
BUNDLE_NAME = "feedwarden-default"
REFERENCE_SOURCES = frozenset({"janitr", "presumed_clean"})
LABELS_FILE = "labels.json"
# F1 parity is judged on labels with enough valid positives that one flipped
# post moves F1 by under ~0.02.
PARITY_MIN_POSITIVES = 30
# An F1 drop fails the int8 gate only if int8's extra errors on that label are also more
# than chance (McNemar's exact one-sided test at this level): at 36-54 positives two or
# three changed decisions move F1 by 0.02-0.05, and the drop alone failed int8 on 3 of 4
# seeds of the default recipe (max |Δp| <= 0.16 and agreement >= 0.98 in all four).
PARITY_ALPHA = 0.05


@dataclass
class Stage:
    """Wall-clock timings per pipeline stage."""

    timings: dict[str, float]

    def mark(self, name: str, started: float) -> float:
        now = time.monotonic()
        self.timings[name] = round(now - started, 1)
        log.info("stage %s took %.1fs", name, now - started)
        return now


def run(config: PipelineConfig, data: Path, out: Path) -> Bundle:
    """Run everything; the candidate bundle lands in `out/bundle`, the report in `out/report`."""
    import torch

    from feedwarden.training.mixing import mix
    from feedwarden.training.train import Encoded, load_tokenizer, train_model, validation_loss

    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    stage, t = Stage({}), time.monotonic()
    corpus = load_corpus(data, config)
    view, dropped = select_view(corpus.train, config.min_support)
    tokenizer = load_tokenizer(config.max_length)
    mixed = mix(corpus.train, lambda r: _positives(r, view), config.mix, config.seed)
    sets = {
        name: _encode(tokenizer, rows, view, Encoded)
        for name, rows in (("train", mixed), ("valid", corpus.valid), ("calib", corpus.calib))
    }
    t = stage.mark("data", t)
    models = []
    histories: dict[str, list[dict[str, float]]] = {}
    for seed in config.seeds:
        model, histories[f"seed_{seed}"] = train_model(
            sets["train"], _every_nth(sets["valid"], 3), len(view.safety), len(view.topic), config, seed
        )
        models.append(model)
    model = _average(models)
    if len(models) > 1:
        histories["averaged"] = [{"valid_loss": validation_loss(model, sets["valid"])}]
        log.info("weight-averaged model: %s", histories["averaged"])
    t = stage.mark("train", t)
    (out / LABELS_FILE).write_text(json.dumps(view.heads) + "\n")
    graphs = _export(model, out / "onnx", _quantization_sample(sets["calib"].ids, config.seed))
    stage.mark("export", t)
    extra = {"dropped_labels_below_support": dropped, "history": histories}
    return finish(config, corpus, view, sets, graphs, out, stage, extra)


def run_config(out: Path) -> PipelineConfig:
    """The settings a finished run was trained with (its report's `config`): its seed and
    row counts fix the corpus splits, so a recalibration under other settings would tune
    and judge on rows the run trained on."""
    report = out / "report" / "report.json"
    if not report.is_file():
        raise FileNotFoundError(f"{report} not found: is {out} a finished `feedwarden train` run?")
    return PipelineConfig.from_dict(json.loads(report.read_text()).get("config"))


def recalibrate(config: PipelineConfig, data: Path, out: Path) -> Bundle:
    """Refit calibration, thresholds and references for a finished run's graphs
    (`out/onnx`) on the current calib data, re-evaluate and rebuild the bundle."""
    from feedwarden.training.train import Encoded, load_tokenizer

    heads = json.loads((out / LABELS_FILE).read_text())
    view = TaskView(safety=tuple(heads["safety"]), topic=tuple(heads["topic"]))
    corpus = load_corpus(data, config)
    tokenizer = load_tokenizer(config.max_length)
    sets = {name: _encode(tokenizer, getattr(corpus, name), view, Encoded) for name in ("valid", "calib")}
    graphs = {variant: out / "onnx" / f"{variant}.onnx" for variant in ("fp32", "int8")}
    return finish(config, corpus, view, sets, graphs, out, Stage({}), {"recalibrated": True})


def finish(
    config: PipelineConfig,
    corpus: Corpus,
    view: TaskView,
    sets: dict[str, Any],
    graphs: dict[str, Path],
    out: Path,
    stage: Stage,
    extra: dict[str, Any],
) -> Bundle:
    """From exported graphs: score calib/valid, int8 parity gate, calibration, thresholds,
    evaluation, report and the candidate bundle."""
    t = time.monotonic()
    logits = {
        variant: {split: _onnx_logits(path, sets[split].ids) for split in ("calib", "valid")}
        for variant, path in graphs.items()
    }
    t = stage.mark("onnx_scoring", t)
    parity = int8_parity(logits, corpus, view, config)
    variant = config.variant if config.variant != "auto" else ("int8" if parity["passed"] else "fp32")
    if variant == "int8" and not parity["passed"]:
        log.warning("int8 forced although its parity gate fails: %s", parity)
    calibration, policy, threshold_info = fit_policy(logits[variant]["calib"], corpus.calib, view, config)
    valid_probs = apply_calibration(logits[variant]["valid"], view, calibration)
    results = evaluate(corpus.valid, valid_probs, view, policy)
    results |= extra | {
        "variant": variant,
        "int8_parity": parity,
        "thresholds": threshold_info,
        "corpus": corpus.report,
        "config": config.to_dict(),
    }
    t = stage.mark("calibrate_evaluate", t)
    references = build_references(logits[variant]["calib"], corpus.calib, view, calibration, policy)
    results |= {
        "timings": stage.timings,
        "sizes": {name: path.stat().st_size for name, path in graphs.items()},
    }
    bundle = assemble_bundle(out, graphs[variant], config, view, calibration, policy, references, results)
    t = stage.mark("bundle", t)
    results["regression_vectors"] = summarize(run_vectors(bundle, load_vectors()))
    results["functional_hate"] = functional_report(bundle)
    stage.mark("probes", t)  # before the report, which records the timings
    write_report(out / "report", results, corpus.valid, valid_probs, view, policy)
    return bundle


def _every_nth(data: Any, n: int) -> Any:
    """A deterministic 1/n of an encoded set: epoch selection needs no full valid pass."""
    return type(data)(data.ids[::n], data.targets[::n], data.mask[::n])


def _positives(row: Example, view: TaskView) -> set[str]:
    return view.sources[row.source].head_labels(row.labels) & set(view.labels)


def _encode(tokenizer: Any, rows: Sequence[Example], view: TaskView, encoded: Any) -> Any:
    targets, mask = view.targets(rows)
    return encoded.build(tokenizer, [r.text for r in rows], targets, mask)


def _average(models: list[Any]) -> Any:
    """One model from several seeds: uniform weight averaging (same pretrained start)."""
    if len(models) == 1:
        return models[0]
    import torch

    base = models[0]
    states = [m.state_dict() for m in models]
    averaged = {
        key: (torch.stack([s[key].float() for s in states]).mean(0).to(states[0][key].dtype))
        if states[0][key].is_floating_point()
        else states[0][key]
        for key in states[0]
    }
    base.load_state_dict(averaged)
    return base


def _export(model: Any, dest: Path, calibration_ids: list[list[int]]) -> dict[str, Path]:
    from feedwarden.models.export import export_onnx, fuse_attention, quantize_int8

    config = model.encoder.config
    raw = export_onnx(model, dest / "raw.onnx")
    fp32 = fuse_attention(raw, dest / "fp32.onnx", int(config.num_attention_heads), int(config.hidden_size))
    raw.unlink()
    return {"fp32": fp32, "int8": quantize_int8(fp32, dest / "int8.onnx", calibration_ids)}


def _quantization_sample(ids: list[list[int]], seed: int, size: int = 320) -> list[list[int]]:
    """A seeded sample of calib posts for the static quantizer's activation ranges."""
    chosen = np.random.default_rng(seed).choice(len(ids), min(size, len(ids)), replace=False)
    return [ids[i] for i in sorted(chosen)]


def _onnx_logits(path: Path, ids: list[list[int]]) -> np.ndarray:
    from feedwarden.models.export import run_logits

    return run_logits(path, ids)


def apply_calibration(
    logits: np.ndarray, view: TaskView, calibration: dict[str, tuple[float, float]]
) -> np.ndarray:
    a = np.array([calibration[lab][0] for lab in view.labels], np.float32)
    b = np.array([calibration[lab][1] for lab in view.labels], np.float32)
    return cal.sigmoid(logits * a + b).astype(np.float32)


def fit_policy(
    logits: np.ndarray, rows: Sequence[Example], view: TaskView, config: PipelineConfig
) -> tuple[dict[str, tuple[float, float]], Policy, dict[str, Any]]:
    """Platt per label, then thresholds per label, all on calib."""
    targets, mask = view.targets(rows)
    sources = np.array([row.source for row in rows])
    calibration = cal.calibrate_all(logits, targets, mask, view.labels)
    probs = apply_calibration(logits, view, calibration)
    rules, info = {}, {}
    for j, label in enumerate(view.labels):
        chosen = mask[:, j] > 0
        scores, truth = probs[chosen, j], targets[chosen, j]
        if view.head_of(label) == "safety":
            budget = FPR_BUDGETS.get(label, DEFAULT_FPR_BUDGET)
            hide_budget = HIDE_FPR_BUDGETS.get(label, budget * config.hide_budget_ratio)
            thresholds, info[label] = cal.safety_thresholds(
                scores, truth, sources[chosen], budget, hide_budget, config.confidence
            )
            rules[label] = Rule(label, "safety", thresholds, TIERS.get(label, "standard"), budget)
        else:
            thresholds = {"badge": cal.topic_threshold(scores, truth)}
            info[label] = {"calib_positives": int(truth.sum()), "calib_rows": int(chosen.sum())}
            rules[label] = Rule(label, "topic", thresholds, "informational")
    info["scam_bucket"] = _cap_scam_bucket(rules, probs, targets, mask, sources, view, config)
    version = datetime.now(UTC).strftime("%Y.%m.%d.%H%M%S")
    return calibration, Policy(version, rules), info


def _cap_scam_bucket(
    rules: dict[str, Rule], probs: np.ndarray, targets: np.ndarray, mask: np.ndarray, sources: np.ndarray,
    view: TaskView, config: PipelineConfig,
) -> dict[str, Any]:
    """The scam bucket's labels act as one (a post is treated as fraud/spam when any of them
    warns), so their union gets the FPR budget too (`calibrate.group_floor`); raises `rules`' warns."""
    members = [lab for lab in view.labels if lab in SCAM_GROUP and lab in rules]
    if not members:
        return {}
    columns = [view.labels.index(lab) for lab in members]
    rows = (mask[:, columns] > 0).all(1)
    before = np.array([rules[lab].thresholds["warn"] for lab in members])
    negative = np.asarray((targets[rows][:, columns] < 0.5).all(1))
    floor = cal.group_floor(probs[rows][:, columns], negative, sources[rows], before, DEFAULT_FPR_BUDGET,
                            config.confidence)
    raised = {}
    for label, old, new in zip(members, before, floor.thresholds, strict=True):
        if new > old:
            warn = cal.round_up(float(new))
            rule = rules[label]
            thresholds = dict(rule.thresholds) | {"warn": warn, "hide": max(rule.thresholds["hide"], warn)}
            rules[label] = Rule(label, rule.head, thresholds, rule.tier, rule.fpr_budget)
            raised[label] = {"from": float(old), "to": warn}
    return {"members": members, "fpr_budget": DEFAULT_FPR_BUDGET, "allowed_false_positives": floor.allowed,
            "false_positives_before": floor.before, "false_positives_after": floor.after, "raised": raised}


def int8_parity(
    logits: dict[str, dict[str, np.ndarray]], corpus: Corpus, view: TaskView, config: PipelineConfig
) -> dict[str, Any]:
    """int8 vs fp32 on valid under fp32's calibration and thresholds: max |Δp|, per-label
    decision agreement and per-label F1 change (labels with >= PARITY_MIN_POSITIVES valid
    positives; a drop beyond the gate fails only if int8's extra errors are significant)."""
    calibration, policy, _ = fit_policy(logits["fp32"]["calib"], corpus.calib, view, config)
    probs = {v: apply_calibration(logits[v]["valid"], view, calibration) for v in ("fp32", "int8")}
    delta = np.abs(probs["fp32"] - probs["int8"])
    thresholds = np.array([policy.rules[lab].lowest_threshold for lab in view.labels])
    decided = {v: probs[v] >= thresholds for v in probs}
    agreement = (decided["fp32"] == decided["int8"]).mean(0)
    targets, mask = view.targets(corpus.valid)
    f1 = {v: evaluate(corpus.valid, probs[v], view, policy)["labels"] for v in probs}
    f1_change, extra_errors = {}, {}
    for j, lab in enumerate(view.labels):
        if f1["fp32"][lab]["support"] < PARITY_MIN_POSITIVES:
            continue
        rows = mask[:, j] > 0
        f1_change[lab] = f1["int8"][lab]["f1"] - f1["fp32"][lab]["f1"]
        extra_errors[lab] = mcnemar_worse(targets[rows, j] > 0, decided["fp32"][rows, j],
                                          decided["int8"][rows, j])
    worst_drop = -min(f1_change.values(), default=0.0)
    f1_failures = sorted(lab for lab, change in f1_change.items()
                         if -change > config.int8_max_f1_drop and extra_errors[lab]["p"] < PARITY_ALPHA)
    passed = (
        delta.max() <= config.int8_max_abs_delta
        and agreement.min() >= config.int8_min_agreement
        and not f1_failures
    )
    return {
        "max_abs_delta": float(delta.max()),
        "p99_abs_delta": float(np.quantile(delta, 0.99)),
        "mean_abs_delta": float(delta.mean()),
        "min_decision_agreement": float(agreement.min()),
        "decision_agreement": {lab: float(a) for lab, a in zip(view.labels, agreement, strict=True)},
        "worst_f1_drop": float(worst_drop),
        "f1_change": f1_change,
        "extra_errors": extra_errors,
        "f1_failures": f1_failures,
        "gate": {
            "max_abs_delta": config.int8_max_abs_delta,
            "min_agreement": config.int8_min_agreement,
            "max_f1_drop": config.int8_max_f1_drop,
            "f1_drop_alpha": PARITY_ALPHA,
        },
        "passed": bool(passed),
    }


def mcnemar_worse(truth: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """McNemar's exact one-sided test that `after` decides worse than `before`.

    `lost`: rows only `before` gets right; `gained`: rows only `after` gets right;
    `p`: the chance of at least `lost` of the `lost + gained` discordant rows going
    against `after` if each were a fair coin.
    """
    lost = int(((before == truth) & (after != truth)).sum())
    gained = int(((after == truth) & (before != truth)).sum())
    p = float(binom.sf(lost - 1, lost + gained, 0.5)) if lost else 1.0
    return {"lost": lost, "gained": gained, "p": p}


def build_references(
    logits: np.ndarray,
    rows: Sequence[Example],
    view: TaskView,
    calibration: dict[str, tuple[float, float]],
    policy: Policy,
) -> dict[str, Reference]:
    """Per-label drift references on the realistic base-rate part of calib."""
    return references_of(apply_calibration(logits, view, calibration), rows, view, policy)


def references_of(
    probs: np.ndarray, rows: Sequence[Example], view: TaskView, policy: Policy
) -> dict[str, Reference]:
    """The drift reference of every label with a rule, from calibrated probabilities
    (`rows` x `view.labels`): the base-rate rows (Janitr and presumed clean) only, binned
    on `REFERENCE_EDGES` by `drift.reference_from_scores`, the binning the worker's windows
    use. Training and recalibration both build references here. Empty if no row is a
    base-rate row."""
    chosen = [i for i, r in enumerate(rows) if r.source in REFERENCE_SOURCES]
    if not chosen:
        return {}
    return {
        label: reference_from_scores(
            probs[chosen, view.labels.index(label)].astype(np.float64), rule.lowest_threshold, REFERENCE_EDGES
        )
        for label, rule in policy.rules.items()
        if label in view.labels
    }


def assemble_bundle(
    out: Path,
    graph: Path,
    config: PipelineConfig,
    view: TaskView,
    calibration: dict[str, tuple[float, float]],
    policy: Policy,
    references: dict[str, Reference],
    results: dict[str, Any],
) -> Bundle:
    from feedwarden.models.export import name_labels
    from feedwarden.training.train import load_tokenizer

    staging = out / "files"
    staging.mkdir(parents=True, exist_ok=True)
    heads = (Head("safety", "safety_logits", view.safety), Head("topic", "topic_logits", view.topic))
    load_tokenizer(config.max_length).save(str(staging / "tokenizer.json"))
    (staging / "policy.json").write_text(json.dumps(policy.to_dict(), indent=2) + "\n")
    manifest = Manifest(
        name=BUNDLE_NAME,
        version=policy.version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        max_length=config.max_length,
        heads=heads,
        calibration=calibration,
        files={},
        reference=references,
        metrics=_finite(json.loads(json.dumps(manifest_metrics(results), default=json_default))),
    )
    dest = out / "bundle"
    if dest.exists():
        shutil.rmtree(dest)
    return write_bundle(
        dest,
        manifest,
        {
            "model.onnx": name_labels(graph, staging / "model.onnx", {h.output: h.labels for h in heads}),
            "tokenizer.json": staging / "tokenizer.json",
            "policy.json": staging / "policy.json",
        },
    )


def manifest_metrics(results: dict[str, Any]) -> dict[str, Any]:
    keep = ("threshold", "precision", "recall", "f1", "fpr", "support", "pr_auc", "ece")
    return {
        "split": "valid",
        "variant": results["variant"],
        "labels": {lab: {k: m[k] for k in keep} for lab, m in results["labels"].items()},
        "aggregate": results["aggregate"],
        "janitr": results["janitr"],
        "tweeteval": results["tweeteval"],
        "int8_parity": {
            k: v for k, v in results["int8_parity"].items()
            if k not in ("decision_agreement", "f1_change", "extra_errors")
        },
        "gates": {lab: g["status"] for lab, g in results["gates"].items()},
        # The corpus settings the bundle was trained with: recalibration rebuilds the
        # same calib/valid splits from them (`PipelineConfig.from_dict`).
        "config": results["config"],
    }


def _finite(value: Any) -> Any:
    """NaN (e.g. PR-AUC without positives) becomes null, so the manifest stays strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
