"""The retrain job without a broker: base-rate sets, gates, versions, message contracts, dedupe."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from feedwarden.models.bundle import Bundle, load_bundle
from feedwarden.models.engine import Engine
from feedwarden.models.registry import Registry, check_version
from feedwarden.models.updates import ModelUpdate, UpdateError, decode
from feedwarden.training import feedback, recalibration, retrain, vectors
from feedwarden.training.config import PipelineConfig
from feedwarden.training.data import Example
from feedwarden.training.recalibration import Pools, clean_share_of, version_name, with_verdicts
from feedwarden.training.vectors import Vector
from feedwarden.training.views import UMBRELLA, TaskView

NOW = datetime(2026, 11, 22, 1, 30, 0, tzinfo=UTC)
DIGEST = "ab" * 32
SAFETY = ("scam", "phishing", "spam", "promo", "hate", "offensive")
# text template -> labels, for the tiny keyword bundle
POSITIVES = {
    "scam alert {i}": {"scam"},
    "verify password {i}": {"phishing"},
    "buy discount {i}": {"spam", "promo"},
}
TOPICS = {"bitcoin {i}": {"topic_crypto"}, "election {i}": {"topic_news"}, "match {i}": {"topic_sports"}}


def _row(text: str, labels: set[str], source: str = "janitr", split: str = "calib") -> Example:
    return Example(id=f"{source}:{text}", text=text, labels=frozenset(labels), source=source, split=split)


def _pool(per_label: int, presumed: int, split: str, inverted: bool = False) -> list[Example]:
    """Janitr-like labelled rows and presumed-clean fill for the tiny bundle.

    `inverted` attaches the labels to plain texts and leaves the trigger texts unlabelled,
    so a model that fires on the triggers looks useless."""
    rows: list[Example] = []
    for template, labels in (POSITIVES | TOPICS).items():
        for i in range(per_label):
            text = template.format(i=i)
            if inverted:
                plain = f"hello world {len(rows)}"
                rows += [_row(plain, labels, split=split), _row(text, {"clean"}, split=split)]
            else:
                rows.append(_row(text, labels, split=split))
    rows += [_row(f"hello lovely day {i}", {"clean"}, split=split) for i in range(per_label)]
    rows += [_row(f"the world {split} {i}", set(), "presumed_clean", split) for i in range(presumed)]
    return rows


# ------------------------------------------------------------------ base-rate calibration set


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _labelled(prefix: str, n: int, labels: list[str], field: str = "labels") -> list[dict[str, object]]:
    return [{"id": f"{prefix}-{i}", "text": f"{prefix} post number {i}", field: labels} for i in range(n)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded, synthetic data root with every source the corpus loader reads."""
    root = tmp_path_factory.mktemp("data")
    for split in ("train", "valid", "calib"):
        rows = _labelled(f"j{split} scam", 20, ["scam"]) + _labelled(f"j{split} clean", 30, ["clean"])
        _write_jsonl(root / "janitr" / f"{split}.jsonl", rows)
    for task in ("hate", "offensive"):
        train = _labelled(f"{task} yes", 600, [task]) + _labelled(f"{task} no", 600, [])
        _write_jsonl(root / "tweeteval" / f"{task}_train.jsonl", train)
        val = _labelled(f"{task} val yes", 150, [task]) + _labelled(f"{task} val no", 150, [])
        _write_jsonl(root / "tweeteval" / f"{task}_val.jsonl", val)
    _write_jsonl(root / "davidson" / "davidson.jsonl", _labelled("davidson", 2500, []))
    for name in ("train", "validation"):
        _write_jsonl(
            root / "tweettopic" / f"en_{name}.jsonl", _labelled(f"topic {name}", 20, ["sports"], "topics")
        )
    return root


@pytest.mark.parametrize("share", [0.90, 0.95, 0.98])
def test_base_rate_share_is_exact_for_a_seeded_pool(data_dir: Path, share: float) -> None:
    pools = recalibration.load_pools(data_dir, PipelineConfig(seed=7, calib_clean_share=share))
    for rows in (pools.calib, pools.valid):
        base = [r for r in rows if r.source in ("janitr", "presumed_clean")]
        assert sum(bool(r.labels & {"scam"}) for r in base) == 20  # every Janitr positive kept
        assert clean_share_of(rows, SAFETY) == pytest.approx(share, abs=1e-12)
    assert {r.source for r in pools.calib} >= {"tweeteval_hate", "tweeteval_offensive"}


@pytest.mark.parametrize("share", [0.90, 0.95, 0.98])
def test_verdicts_join_at_the_base_rate_without_dropping_corpus_rows(data_dir: Path, share: float) -> None:
    pools = recalibration.load_pools(data_dir, PipelineConfig(seed=7, calib_clean_share=share))
    spare = recalibration.spare_presumed(data_dir, PipelineConfig(seed=7, calib_clean_share=share), pools)
    assert not {r.id for r in spare.calib + spare.valid} & {r.id for r in pools.calib + pools.valid}
    verdicts = [_row(f"confirmed {i}", {"scam"}, "feedback/scam") for i in range(5)]
    verdicts += [_row(f"overturned {i}", set(), "feedback/scam") for i in range(3)]
    rows = with_verdicts(pools.calib, verdicts, spare.calib, SAFETY, share, seed=3)
    assert rows[: len(pools.calib)] == pools.calib and set(verdicts) <= set(rows)
    assert clean_share_of(rows, SAFETY) == pytest.approx(share, abs=1e-12)
    assert rows == with_verdicts(pools.calib, verdicts, spare.calib, SAFETY, share, seed=3)


def test_short_spare_pool_subsamples_verdicts_only() -> None:
    rows = [_row(f"scam {i}", {"scam"}) for i in range(5)] + [
        _row(f"p {i}", set(), "presumed_clean") for i in range(95)
    ]
    verdicts = [_row(f"v {i}", {"scam"}, "feedback/scam") for i in range(10)]
    spare = [_row(f"s {i}", set(), "presumed_clean") for i in range(38)]
    chosen = with_verdicts(rows, verdicts, spare, SAFETY, 0.95, seed=1)
    assert chosen[: len(rows)] == rows
    assert sum(r.source == "feedback/scam" for r in chosen) == 2  # 38 fill rows carry 2 positives


# ------------------------------------------------------------------ version names


def test_version_name_appends_a_utc_stamp_once() -> None:
    first = version_name("2026.11.22.010804", NOW)
    assert first == "2026.11.22.010804-r20261122T013000Z"
    later = version_name(first, datetime(2026, 11, 23, 0, 0, 1, tzinfo=UTC))
    assert later == "2026.11.22.010804-r20261123T000001Z"
    assert check_version(later) == later


# ------------------------------------------------------------------ model.updates contract


def test_update_round_trip_and_unknown_fields() -> None:
    update = ModelUpdate(
        "v1-r20261122T013000Z", DIGEST, "promote", "drift", NOW.isoformat(), {"labels": ["scam"]}
    )
    assert decode(update.encode()) == update
    data = json.loads(update.encode()) | {"extra": 1}
    assert decode(json.dumps(data)) == update
    shadow = ModelUpdate.shadow("v2", DIGEST, "candidate")
    assert decode(shadow.encode()).event == "shadow"
    assert decode(shadow.encode()).request is None


@pytest.mark.parametrize(
    "change",
    [
        {"version": "../etc"},
        {"manifest_sha256": "AB" * 32},
        {"manifest_sha256": "ab"},
        {"event": "delete"},
        {"at": "2026-11-22T01:30:00"},
        {"at": "yesterday"},
        {"request": ["scam"]},
        {"reason": 3},
    ],
)
def test_update_validation_refuses(change: dict[str, object]) -> None:
    good = ModelUpdate("v1", DIGEST, "rollback", "r", NOW.isoformat()).to_dict()
    with pytest.raises(UpdateError):
        decode(json.dumps(good | change))


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'{"version": "v1"}', b"\xff"])
def test_update_decode_refuses_garbage(raw: bytes) -> None:
    with pytest.raises(UpdateError):
        decode(raw)


# ------------------------------------------------------------------ feedback contract


def _verdict(
    post: str, labels: list[str], verdict: str, at: str = "2026-11-22T01:00:00Z"
) -> feedback.Verdict:
    return feedback.Verdict(post, f"text of {post}", tuple(labels), verdict, at)


def test_feedback_parse_keeps_the_latest_verdict_per_post() -> None:
    records = [
        _verdict("1", ["scam"], "confirm").encode(),
        _verdict("1", ["scam"], "overturn", "2026-11-22T02:00:00Z").encode(),
        _verdict("2", ["spam"], "confirm").encode(),
        b'{"post_id": "3", "text": "t", "labels": [], "verdict": "confirm", "at": "2026-11-22T01:00:00Z"}',
        b'{"post_id": "4", "text": "t", "labels": ["scam"], "verdict": "maybe", "at": "2026-11-22"}',
        b"{}",
    ]
    read = feedback.parse(records)
    assert read.summary() == {"records": 6, "invalid": 3, "posts": 2}
    assert {v.post_id: v.verdict for v in read.verdicts} == {"1": "overturn", "2": "confirm"}


def test_feedback_rows_annotate_only_their_labels() -> None:
    view = TaskView(safety=("scam", "spam", UMBRELLA), topic=("topic_crypto",))
    confirm = feedback.to_example(_verdict("1", ["scam", "unknown"], "confirm"), view)
    overturn = feedback.to_example(_verdict("2", ["spam"], "overturn"), view)
    assert feedback.to_example(_verdict("3", ["unknown"], "confirm"), view) is None
    assert confirm is not None and overturn is not None
    extended = feedback.with_feedback_sources(view, [confirm, overturn])
    targets, mask = extended.targets([confirm, overturn])
    column = {lab: j for j, lab in enumerate(view.labels)}
    assert targets[0, column["scam"]] == 1 and targets[0, column[UMBRELLA]] == 1
    assert mask[0, column["spam"]] == 0 and mask[0, column["topic_crypto"]] == 0
    assert targets[1, column["spam"]] == 0 and mask[1, column["spam"]] == 1
    assert mask[1, column[UMBRELLA]] == 0
    assert feedback.half("1") == feedback.half("1") and {feedback.half(str(i)) for i in range(20)} == {
        "calib",
        "valid",
    }


# ------------------------------------------------------------------ the job on the tiny bundle


def test_engine_logits_are_the_uncalibrated_scores(tiny_bundle: Bundle) -> None:
    engine = Engine(tiny_bundle, providers="cpu")
    texts = ["free crypto scam", "hello world", "verify your password"]
    _, logits = engine.logits(texts).flat()
    _, probs = engine.score(texts).flat()
    assert np.allclose(1 / (1 + np.exp(-logits)), probs, atol=1e-6)
    assert logits.max() == pytest.approx(8.0)


@dataclass
class Job:
    options: retrain.Options
    sent: list[tuple[str, str, ModelUpdate]] = field(default_factory=list)


@pytest.fixture
def job(tmp_path: Path, tiny_bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> Job:
    """A broker-free run: no verdicts, and publishing only recorded."""
    options = retrain.Options(
        data=tmp_path / "data",
        registry=tmp_path / "registry",
        bundle=tiny_bundle.path,
        bootstrap="127.0.0.1:9",
        request={"labels": ["scam"], "model_version": "tiny-1"},
    )
    job = Job(options)
    monkeypatch.setattr(retrain, "_feedback", lambda options, serving: ([], {"records": 0}))
    monkeypatch.setattr(retrain, "publish", lambda _bootstrap, *sent: job.sent.append(sent))
    return job


def _use_pools(monkeypatch: pytest.MonkeyPatch, calib: list[Example], valid: list[Example]) -> None:
    monkeypatch.setattr(recalibration, "load_pools", lambda *args, **kwargs: Pools(calib, valid))


def test_passing_candidate_is_written_promoted_and_announced(
    job: Job, tiny_bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_pools(monkeypatch, _pool(15, 900, "calib"), _pool(15, 900, "valid"))
    outcome = retrain.run_once(job.options, now=lambda: NOW)
    assert outcome.status == "promoted" and outcome.exit_code == 0
    assert outcome.version == "tiny-1-r20261122T013000Z"
    assert outcome.details["vector_regressions"] == {}
    registry = Registry(job.options.registry)
    assert [p.version for p in registry.history()] == ["tiny-1", outcome.version]
    [(topic, key, update)] = job.sent
    assert (topic, key, update.event) == ("model.updates", "tiny-keywords", "promote")
    assert update.request == job.options.request
    bundle = registry.load(update.version, update.manifest_sha256)
    original = load_bundle(tiny_bundle.path)
    assert bundle.manifest.files["model.onnx"] == original.manifest.files["model.onnx"]
    assert bundle.manifest.metrics["gates"]["scam"] == "pass"
    assert set(bundle.manifest.reference) == set(json.loads(bundle.policy_path.read_text())["rules"])
    Engine(bundle, providers="cpu").score(["scam"])  # the new bundle serves
    assert outcome.details["corpus_config"].startswith("defaults")
    assert PipelineConfig.from_dict(bundle.manifest.metrics["config"]) == PipelineConfig()
    again = retrain.run_once(job.options, now=lambda: NOW.replace(hour=2))
    assert again.details["corpus_config"] == "manifest" and again.version == "tiny-1-r20261122T023000Z"


def test_config_round_trips_recorded_settings() -> None:
    tiny = PipelineConfig.tiny()
    assert PipelineConfig.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny
    assert PipelineConfig.from_dict(tiny.to_dict() | {"from_the_future": 1}) == tiny
    assert PipelineConfig.from_dict(None) == PipelineConfig()


def test_failing_candidate_is_neither_written_nor_published(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_pools(monkeypatch, _pool(15, 900, "calib"), _pool(15, 900, "valid", inverted=True))
    outcome = retrain.run_once(job.options, now=lambda: NOW)
    assert outcome.status == "gates_failed" and outcome.exit_code == retrain.EXIT_GATES
    assert "scam" in outcome.reason and "retraining needed" in outcome.reason
    assert outcome.version is None and outcome.update is None
    assert Registry(job.options.registry).versions() == []
    assert job.sent == []


def test_a_candidate_failing_a_vector_the_serving_bundle_passes_is_refused(
    job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calibrated on rows whose labels sit on the wrong texts, the candidate stops firing on "scam"."""
    suite = [Vector("scam-word", "positive", "free scam", fires=("scam",))]
    monkeypatch.setattr(vectors, "load_vectors", lambda: suite)
    _use_pools(monkeypatch, _pool(15, 900, "calib", inverted=True), _pool(15, 900, "valid"))
    outcome = retrain.run_once(job.options, now=lambda: NOW)
    assert outcome.status == "gates_failed" and list(outcome.details["vector_regressions"]) == ["scam-word"]
    assert "regression vectors the serving bundle passes fail (scam-word: scam 0." in outcome.reason
    assert Registry(job.options.registry).versions() == [] and job.sent == []


def test_shadow_candidate_is_announced_but_not_promoted(job: Job, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_pools(monkeypatch, _pool(15, 900, "calib"), _pool(15, 900, "valid"))
    outcome = retrain.run_once(replace(job.options, shadow=True), now=lambda: NOW)
    registry = Registry(job.options.registry)
    assert outcome.status == "shadowed"
    assert registry.current().version == "tiny-1"  # type: ignore[union-attr]
    [(_, _, update)] = job.sent
    assert update.event == "shadow" and registry.load(update.version, update.manifest_sha256)


def test_labels_without_calib_data_keep_their_serving_rule(job: Job, monkeypatch: pytest.MonkeyPatch) -> None:
    _use_pools(monkeypatch, _pool(15, 900, "calib"), _pool(15, 900, "valid"))
    outcome = retrain.run_once(job.options, now=lambda: NOW)
    thresholds = outcome.details["thresholds"]
    assert "hate" in outcome.details["kept_serving_rule"]  # Janitr rows say nothing about hate
    assert thresholds["hate"]["after"] == thresholds["hate"]["before"]
    assert thresholds["scam"]["after"] != thresholds["scam"]["before"]


# ------------------------------------------------------------------ serve mode: dedupe


def test_requests_are_deduplicated_and_stale_ones_skipped(tmp_path: Path, tiny_bundle: Bundle) -> None:
    options = retrain.Options(data=tmp_path, registry=tmp_path / "registry", bundle=tiny_bundle.path)
    ledger = retrain.Ledger.open(tmp_path / "ledger.jsonl")
    runs: list[dict[str, object]] = []

    def job(opts: retrain.Options) -> retrain.Outcome:
        runs.append(dict(opts.request or {}))
        return retrain.Outcome("gates_failed", "tiny-1", "no")

    request = {"labels": ["spam", "scam"], "model_version": "tiny-1", "evidence": []}
    same = request | {"labels": ["scam", "spam"], "requested_at": "later"}
    handle = retrain.handle_request
    assert handle(json.dumps(request).encode(), options, ledger, job) == "gates_failed"
    assert handle(json.dumps(same).encode(), options, ledger, job) == "duplicate"
    stale = {"labels": ["scam"], "model_version": "old"}
    assert handle(json.dumps(stale).encode(), options, ledger, job) == "stale"
    assert handle(b"{not json", options, ledger, job) == "malformed"
    assert handle(b'{"labels": "scam"}', options, ledger, job) == "malformed"
    assert runs == [request]
    reopened = retrain.Ledger.open(tmp_path / "ledger.jsonl")
    assert handle(json.dumps(request).encode(), options, reopened, job) == "duplicate"


def test_only_critical_or_new_gate_failures_block() -> None:
    failures = {"scam": ["pr_auc"], "promo": ["pr_auc"], "spam": ["fpr"]}
    before = {"scam": {"status": "fail"}, "promo": {"status": "fail"}, "spam": {"status": "pass"}}
    tiers = {"scam": "critical", "promo": "standard", "spam": "standard"}
    assert retrain.blocking_failures(failures, before, tiers) == {"scam": ["pr_auc"], "spam": ["fpr"]}
    assert retrain.blocking_failures({}, before, tiers) == {}
