"""The retrain job: `feedwarden retrain | rollback | promote`.

`retrain --once` recalibrates the serving bundle (the registry's current
version, else the packaged default, which is imported into the registry
before the first new version is written, so it can be rolled back to) on a
realistic base-rate calibration set plus moderator verdicts from the
`feedback` topic (`training.feedback`), judges the release gates and the
regression vectors (`training.vectors`: none the serving bundle passes may
fail), and if they pass writes `<base>-r<UTC timestamp>` into the
registry (same graph and tokenizer, new calibration, policy and drift
references), promotes it and announces it on `model.updates`
(`models.updates`). With `--shadow` the version is written and announced as
a shadow candidate instead, not promoted. If the gates fail nothing is
written or published; the reasons are printed and the exit code is 3 (a
non-critical label that already failed under the serving bundle is carried
over, not blocking: see `blocking_failures`).
`--retrain` first fine-tunes a new graph with the training pipeline, then
recalibrates that one the same way.

`retrain --serve` consumes `retrain.requests` (`drift.RetrainRequest`
payloads) from the earliest offset without a consumer group, skips requests
already handled (ledger `retrain-requests.jsonl` in the registry, keyed by
model version and labels: workers re-send after a restart) and requests about
a version that no longer serves, and runs the once-job for the rest.

Exit codes: 0 done, 1 unexpected failure, 2 bad input, 3 gates failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feedwarden.models.updates import UPDATES_TOPIC
from feedwarden.training.feedback import FEEDBACK_TOPIC

if TYPE_CHECKING:
    from feedwarden.models.bundle import Bundle
    from feedwarden.models.registry import Promotion, Registry
    from feedwarden.models.updates import ModelUpdate
    from feedwarden.training.config import PipelineConfig
    from feedwarden.training.data import Example
    from feedwarden.training.feedback import FeedbackRead
    from feedwarden.training.recalibration import Candidate, Pools

log = logging.getLogger(__name__)

REQUESTS_TOPIC = "retrain.requests"
LEDGER = "retrain-requests.jsonl"
EXIT_OK, EXIT_INPUT, EXIT_GATES = 0, 2, 3


class InputError(ValueError):
    """A request, data directory or registry the job cannot use."""


@dataclass(frozen=True)
class Topics:
    feedback: str = FEEDBACK_TOPIC
    updates: str = UPDATES_TOPIC
    requests: str = REQUESTS_TOPIC


@dataclass(frozen=True)
class Options:
    data: Path
    registry: Path
    bundle: Path | None = None  # serving bundle when the registry has none; None: packaged default
    bootstrap: str | None = None
    topics: Topics = field(default_factory=Topics)
    request: Mapping[str, Any] | None = None
    shadow: bool = False
    retrain: bool = False
    tiny_retrain: bool = False
    clean_share: float = 0.95
    train_config: Path | None = None  # the bundle's training settings, when its manifest lacks them
    eval_rows: int | None = None
    feedback_timeout_s: float = 20.0


@dataclass
class Outcome:
    status: str  # "promoted" | "shadowed" | "gates_failed"
    base_version: str
    reason: str
    version: str | None = None
    update: dict[str, Any] | None = None
    published: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_GATES if self.status == "gates_failed" else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- the once-job


def run_once(options: Options, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Outcome:
    from feedwarden.models.registry import Registry
    from feedwarden.training.recalibration import version_name
    from feedwarden.training.vectors import regressions

    started = time.monotonic()
    registry = Registry(options.registry)
    serving = serving_bundle(registry, options.bundle)
    verdicts, feedback_summary = _feedback(options, serving)
    timings = {"feedback": round(time.monotonic() - started, 1)}
    config, config_source = _config(options, serving)
    with _graph(options, config, serving) as (base, config):
        if options.retrain:
            timings["retrain"] = round(time.monotonic() - started - sum(timings.values()), 1)
        mark = time.monotonic()
        pools = _pools(options, config, base, verdicts)
        timings["data"] = round(time.monotonic() - mark, 1)
        version = version_name(serving.version, now())
        candidate, before, scored = _evaluate(config, base, pools, version)
        timings["recalibrate"] = round(scored, 1)
        details = _details(base, candidate, before, pools, feedback_summary, timings)
        details["corpus_config"] = "the retraining run's" if options.retrain else config_source
        blocking = blocking_failures(candidate.failures, before["gates"], _tiers(base))
        details["carried_failures"] = sorted(set(candidate.failures) - set(blocking))
        recalibrated = replace(base, manifest=replace(base.manifest, calibration=candidate.calibration))
        details["vector_regressions"] = regressions(serving, recalibrated, candidate.policy)
        if blocking or details["vector_regressions"]:
            reason = _failure_reason(blocking, details["vector_regressions"], options.retrain)
            return Outcome("gates_failed", serving.version, reason, details=details)
        reason = _reason(options)
        adopt(registry, serving)
        written = _write(registry, base, candidate, version, details, options, config)
    update = _announce(registry, written, reason, options)
    outcome = Outcome(
        "shadowed" if options.shadow else "promoted",
        serving.version,
        reason,
        version,
        update.to_dict(),
        bool(options.bootstrap),
        details,
    )
    outcome.details["timings"]["total"] = round(time.monotonic() - started, 1)
    return outcome


def serving_bundle(registry: Registry, fallback: Path | None) -> Bundle:
    """The registry's current bundle, else `fallback` (default: the packaged bundle)."""
    from feedwarden.models.bundle import default_bundle_path, load_bundle

    current = registry.current()
    if current is not None:
        return registry.load(current.version, current.manifest_sha256)
    return load_bundle(fallback or default_bundle_path())


def adopt(registry: Registry, serving: Bundle) -> None:
    """An empty registry first imports the bundle serving outside it and records it as
    promoted, so a later rollback has something to go back to."""
    if registry.current() is not None:
        return
    dest = registry.path_of(serving.version)
    if not dest.exists():
        staging = dest.with_name(f".{dest.name}.import")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(serving.path, staging)
        staging.rename(dest)
    registry.promote(serving.version, reason="imported as the first serving version")


def _feedback(options: Options, serving: Bundle) -> tuple[list[Example], dict[str, int]]:
    """Verdict rows (as labelled examples) from the feedback topic, if a broker is given."""
    from feedwarden.training.feedback import to_example
    from feedwarden.training.recalibration import view_of

    if not options.bootstrap:
        return [], {"records": 0, "invalid": 0, "posts": 0, "usable": 0}
    read = asyncio.run(_read_feedback(options.bootstrap, options.topics.feedback, options.feedback_timeout_s))
    view = view_of(serving.manifest, [])
    rows = [row for v in read.verdicts if (row := to_example(v, view)) is not None]
    return rows, {**read.summary(), "usable": len(rows)}


async def _read_feedback(bootstrap: str, topic: str, timeout_s: float) -> FeedbackRead:
    from feedwarden.stream.broker import create_topics
    from feedwarden.training.feedback import read_feedback

    await create_topics(bootstrap, [topic])  # Tansu wants topics created before use
    return await read_feedback(bootstrap, topic, timeout_s=timeout_s)


def _config(options: Options, serving: Bundle) -> tuple[PipelineConfig, str]:
    """The settings that fixed the serving bundle's corpus splits, and where they came from:
    `--train-config` (a run's report.json or a bare config), else the manifest, else defaults."""
    from feedwarden.training.config import PipelineConfig

    if options.train_config is not None:
        try:
            recorded = json.loads(options.train_config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read --train-config {options.train_config}: {exc}") from exc
        recorded, source = recorded.get("config", recorded), str(options.train_config)
    elif "config" in serving.manifest.metrics:
        recorded, source = serving.manifest.metrics["config"], "manifest"
    else:
        recorded, source = None, "defaults (the bundle records no training settings)"
        log.warning(
            "%s records no training settings: splits may differ from its training run", serving.version
        )
    config = PipelineConfig.from_dict(recorded)
    return _with_options(config, options), source


def _with_options(config: PipelineConfig, options: Options) -> PipelineConfig:
    return replace(
        config,
        calib_clean_share=options.clean_share,
        eval_rows=options.eval_rows if options.eval_rows is not None else config.eval_rows,
    )


def _pools(options: Options, config: PipelineConfig, serving: Bundle, verdicts: list[Example]) -> Pools:
    """The corpus's calib and gate sets at the base rate, each with its half of the verdicts."""
    from feedwarden.training.data import DatasetError, drop_overlap
    from feedwarden.training.recalibration import Pools, load_pools, spare_presumed, with_verdicts

    try:
        pools = load_pools(options.data, config)
        spare = spare_presumed(options.data, config, pools) if verdicts else Pools([], [])
    except DatasetError as exc:
        raise InputError(str(exc)) from exc
    gate = drop_overlap([r for r in verdicts if r.split == "valid"], pools.calib)
    tune = drop_overlap([r for r in verdicts if r.split == "calib"], pools.valid + gate)
    safety = serving.manifest.head("safety").labels
    share, seed = config.calib_clean_share, config.seed
    return Pools(
        with_verdicts(pools.calib, tune, spare.calib, safety, share, seed),
        with_verdicts(pools.valid, gate, spare.valid, safety, share, seed),
    )


@contextlib.contextmanager
def _graph(
    options: Options, config: PipelineConfig, serving: Bundle
) -> Iterator[tuple[Bundle, PipelineConfig]]:
    """The bundle whose graph is recalibrated and the settings of its corpus: the serving
    one, or with `--retrain` a freshly fine-tuned one (training pipeline, same settings or
    CI-sized ones, in a scratch directory removed afterwards)."""
    if not options.retrain:
        yield serving, config
        return
    import tempfile

    from feedwarden.training.config import PipelineConfig
    from feedwarden.training.pipeline import run

    if options.tiny_retrain:
        config = _with_options(PipelineConfig.tiny().with_overrides(max_length=config.max_length), options)
    with tempfile.TemporaryDirectory(prefix="feedwarden-retrain-") as scratch:
        log.info("retraining the graph (%s settings)", "tiny" if options.tiny_retrain else "recorded")
        bundle = run(config, options.data, Path(scratch))
        yield replace(bundle, manifest=replace(bundle.manifest, name=serving.manifest.name)), config


def _evaluate(
    config: PipelineConfig, base: Bundle, pools: Pools, version: str
) -> tuple[Candidate, dict[str, Any], float]:
    from feedwarden.models.engine import Engine
    from feedwarden.policy.rules import Policy
    from feedwarden.training.recalibration import candidate

    started = time.monotonic()
    engine = Engine(base, providers="cpu")
    chosen, before = candidate(base, Policy.from_file(base.policy_path), engine, pools, version, config)
    return chosen, before, time.monotonic() - started


def _details(
    base: Bundle,
    candidate: Candidate,
    before: Mapping[str, Any],
    pools: Pools,
    feedback: Mapping[str, int],
    timings: dict[str, float],
) -> dict[str, Any]:
    from feedwarden.policy.rules import Policy
    from feedwarden.training.recalibration import clean_share_of, json_safe

    safety = base.manifest.head("safety").labels
    serving_policy = Policy.from_file(base.policy_path)
    return json_safe(
        {
            "graph_from": base.version,
            "calib_rows": len(pools.calib),
            "gate_rows": len(pools.valid),
            "clean_share": {
                "calib": clean_share_of(pools.calib, safety),
                "gate": clean_share_of(pools.valid, safety),
            },
            "feedback": dict(feedback),
            "kept_serving_rule": list(candidate.kept),
            "thresholds": {
                label: {
                    "before": dict(serving_policy.rules[label].thresholds),
                    "after": dict(rule.thresholds),
                }
                for label, rule in candidate.policy.rules.items()
            },
            "gates": {
                label: {"before": before["gates"][label]["status"], "after": gate["status"], **_why(gate)}
                for label, gate in candidate.results["gates"].items()
            },
            "timings": timings,
        }
    )


def blocking_failures(
    failures: Mapping[str, list[str]], before: Mapping[str, Mapping[str, Any]], tiers: Mapping[str, str]
) -> dict[str, list[str]]:
    """The gate failures that refuse a candidate.

    A critical label's failure always does. A failure of another tier that the
    serving bundle already has on the same gate set is carried over (reported,
    not blocking): recalibration is monotonic per label, so it cannot repair a
    ranking metric such as PR-AUC, and refusing it would hold every other
    label's recalibration hostage. A failure the serving bundle did not have
    always refuses the candidate.
    """
    return {
        label: why
        for label, why in failures.items()
        if tiers.get(label) == "critical" or before.get(label, {}).get("status") != "fail"
    }


def _tiers(bundle: Bundle) -> dict[str, str]:
    from feedwarden.policy import Policy

    return {label: rule.tier for label, rule in Policy.from_file(bundle.policy_path).rules.items()}


def _why(gate: Mapping[str, Any]) -> dict[str, Any]:
    return {"failures": gate["failures"]} if gate.get("failures") else {}


def _failure_reason(
    failures: Mapping[str, list[str]], vectors: Mapping[str, list[str]], retrained: bool
) -> str:
    reasons = []
    if failures:
        listed = "; ".join(f"{label}: {', '.join(why)}" for label, why in sorted(failures.items()))
        reasons.append(f"release gates fail for {sorted(failures)} ({listed})")
    if vectors:
        listed = "; ".join(f"{vid}: {', '.join(why)}" for vid, why in sorted(vectors.items()))
        reasons.append(f"regression vectors the serving bundle passes fail ({listed})")
    hint = "" if retrained else " — recalibration alone cannot meet them; retraining needed (--retrain)"
    return "; ".join(reasons) + hint


def _reason(options: Options) -> str:
    request = options.request
    what = "retrain" if options.retrain else "recalibration"
    if request is None:
        return f"{what} (manual)"
    return f"{what} on sustained drift of {list(request['labels'])} under {request['model_version']}"


def _write(
    registry: Registry,
    base: Bundle,
    chosen: Candidate,
    version: str,
    details: Mapping[str, Any],
    options: Options,
    config: PipelineConfig,
) -> Bundle:
    """The new version in the registry: the base's graph and tokenizer, new manifest and policy."""
    import tempfile

    from feedwarden.models.bundle import write_bundle
    from feedwarden.training.recalibration import manifest_metrics

    manifest = base.manifest
    extra = {**details, "request": options.request}
    new = replace(
        manifest,
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        calibration=chosen.calibration,
        reference=chosen.references,
        metrics=manifest_metrics(chosen.results, manifest, extra, config),
        files={},
    )
    with tempfile.TemporaryDirectory(dir=registry.root) as scratch:
        policy = Path(scratch) / "policy.json"
        policy.write_text(json.dumps(chosen.policy.to_dict(), indent=2) + "\n", encoding="utf-8")
        sources = {
            manifest.model_file: base.model_path,
            manifest.tokenizer_file: base.tokenizer_path,
            manifest.policy_file: policy,
        }
        return write_bundle(registry.path_of(version), new, sources)


def _announce(registry: Registry, bundle: Bundle, reason: str, options: Options) -> ModelUpdate:
    """Promote (or, for a shadow, only announce) and publish when a broker is given."""
    from feedwarden.models.bundle import MANIFEST, sha256_file
    from feedwarden.models.updates import ModelUpdate

    if options.shadow:
        digest = sha256_file(bundle.path / MANIFEST)
        update = ModelUpdate.shadow(bundle.version, digest, reason, options.request)
    else:
        update = ModelUpdate.from_promotion(registry.promote(bundle.version, reason), options.request)
    if options.bootstrap:
        publish(options.bootstrap, options.topics.updates, bundle.manifest.name, update)
    return update


def publish(bootstrap: str, topic: str, key: str, update: ModelUpdate) -> None:
    asyncio.run(_publish(bootstrap, topic, key, update.encode()))


async def _publish(bootstrap: str, topic: str, key: str, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    from feedwarden.stream.broker import create_topics

    await create_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


# ---------------------------------------------------------------- serve mode


def request_key(request: Mapping[str, Any]) -> str:
    """Dedupe key of a retrain request: model version and sorted labels."""
    labels = request.get("labels")
    version = request.get("model_version")
    if (
        not isinstance(version, str)
        or not isinstance(labels, list)
        or not all(isinstance(x, str) for x in labels)
    ):
        raise InputError("a retrain request needs `model_version` (str) and `labels` (list of str)")
    return f"{version}|{','.join(sorted(set(labels)))}"


@dataclass
class Ledger:
    """Request keys already handled, persisted one JSON line each."""

    path: Path
    keys: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, path: Path) -> Ledger:
        keys = set()
        if path.is_file():
            keys = {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()}
        return cls(path, keys)

    def record(self, key: str, outcome: str, detail: str) -> None:
        self.keys.add(key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = {"key": key, "outcome": outcome, "detail": detail, "at": datetime.now(UTC).isoformat()}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def handle_request(raw: bytes, options: Options, ledger: Ledger, job: Callable[[Options], Outcome]) -> str:
    """One retrain.requests message: skip malformed, duplicate or stale ones, else run `job`."""
    from feedwarden.models.registry import Registry

    try:
        request = json.loads(raw)
        key = request_key(request)
    except (json.JSONDecodeError, UnicodeDecodeError, InputError, AttributeError) as exc:
        log.warning("skipping malformed retrain request: %s", exc)
        return "malformed"
    if key in ledger.keys:
        log.info("request %s already handled", key)
        return "duplicate"
    serving = serving_bundle(Registry(options.registry), options.bundle).version
    if request["model_version"] != serving:
        ledger.record(key, "stale", f"serving {serving}")
        log.info("request %s is about %s, serving is %s: stale", key, request["model_version"], serving)
        return "stale"
    outcome = job(replace(options, request=request))
    ledger.record(key, outcome.status, outcome.reason)
    log.info("request %s: %s %s (%s)", key, outcome.status, outcome.version or "", outcome.reason)
    return outcome.status


async def serve(options: Options, job: Callable[[Options], Outcome] = run_once) -> None:
    """Consume retrain.requests forever from the earliest offset; one job at a time."""
    from aiokafka import AIOKafkaConsumer

    from feedwarden.stream.broker import create_topics

    assert options.bootstrap is not None
    await create_topics(options.bootstrap, [options.topics.requests])
    ledger = Ledger.open(options.registry / LEDGER)
    consumer = AIOKafkaConsumer(
        options.topics.requests,
        bootstrap_servers=options.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    log.info("serving retrain requests from %s", options.topics.requests)
    try:
        async for message in consumer:
            try:
                await asyncio.to_thread(handle_request, message.value or b"", options, ledger, job)
            except Exception:  # a failed job (bad bundle, broker hiccup) must not end the service
                log.exception(
                    "retrain request at offset %d failed; it will be retried on restart", message.offset
                )
    finally:
        await consumer.stop()


# ---------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    retrain = subparsers.add_parser(
        "retrain", help="recalibrate (or retrain) and publish a new bundle version"
    )
    mode = retrain.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one job, then exit")
    mode.add_argument("--serve", action="store_true", help="run a job per message on retrain.requests")
    retrain.add_argument("--data", type=Path, default=None, help="data root (default: $FEEDWARDEN_DATA)")
    _common(retrain, bootstrap_required=False)
    retrain.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="serving bundle when the registry is empty (default: the packaged one)",
    )
    retrain.add_argument("--request", default=None, help="a retrain request JSON file, or - for stdin")
    retrain.add_argument("--retrain", action="store_true", help="fine-tune a new graph first")
    retrain.add_argument("--tiny-retrain", action="store_true", help="with --retrain: CI-sized settings")
    retrain.add_argument(
        "--shadow", action="store_true", help="announce as a shadow candidate, do not promote"
    )
    retrain.add_argument("--clean-share", type=float, default=0.95, help="base rate: share of clean posts")
    retrain.add_argument(
        "--train-config",
        type=Path,
        default=None,
        help="the serving bundle's training settings (a run's report.json) when its manifest has none",
    )
    retrain.add_argument(
        "--eval-rows", type=int, default=None, help="subsample calib and gate sets (quick shadow runs only)"
    )
    retrain.add_argument("--feedback-topic", default=FEEDBACK_TOPIC)
    retrain.add_argument("--requests-topic", default=REQUESTS_TOPIC)
    retrain.add_argument("--feedback-timeout", type=float, default=20.0, help="seconds to read feedback")
    retrain.set_defaults(handler=_retrain_command)

    rollback = subparsers.add_parser("rollback", help="serve the previous version again and announce it")
    _common(rollback, bootstrap_required=True)
    rollback.add_argument("--reason", default="")
    rollback.set_defaults(handler=_rollback_command)

    promote = subparsers.add_parser("promote", help="promote a (shadowed) version and announce it")
    promote.add_argument("version")
    _common(promote, bootstrap_required=True)
    promote.add_argument("--reason", default="shadow comparison passed")
    promote.set_defaults(handler=_promote_command)


def _common(parser: argparse.ArgumentParser, *, bootstrap_required: bool) -> None:
    parser.add_argument(
        "--registry",
        type=Path,
        default=Path(os.environ.get("FEEDWARDEN_REGISTRY", "registry")),
        help="registry directory (default: $FEEDWARDEN_REGISTRY or ./registry)",
    )
    env = os.environ.get("KAFKA_BOOTSTRAP")
    parser.add_argument(
        "--bootstrap",
        default=env,
        required=bootstrap_required and env is None,
        help="Kafka bootstrap host:port (default: $KAFKA_BOOTSTRAP)",
    )
    parser.add_argument("--updates-topic", default=UPDATES_TOPIC)


def _options(args: argparse.Namespace) -> Options:
    from feedwarden.training.data import data_root

    if not 0.90 <= args.clean_share <= 0.98:
        raise InputError(f"--clean-share {args.clean_share} is not a realistic base rate (0.90 to 0.98)")
    if args.eval_rows is not None and not args.shadow:
        raise InputError("--eval-rows leaves most labels too few positives to judge; use it with --shadow")
    if args.serve and not args.bootstrap:
        raise InputError("--serve needs --bootstrap (or $KAFKA_BOOTSTRAP)")
    return Options(
        data=args.data or data_root(),
        registry=args.registry,
        bundle=args.bundle,
        bootstrap=args.bootstrap,
        topics=Topics(args.feedback_topic, args.updates_topic, args.requests_topic),
        request=_read_request(args.request),
        shadow=args.shadow,
        retrain=args.retrain,
        tiny_retrain=args.tiny_retrain,
        train_config=args.train_config,
        clean_share=args.clean_share,
        eval_rows=args.eval_rows,
        feedback_timeout_s=args.feedback_timeout,
    )


def _read_request(source: str | None) -> dict[str, Any] | None:
    if source is None:
        return None
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        request = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the retrain request {source}: {exc}") from exc
    request_key(request if isinstance(request, dict) else {})
    return request


def _retrain_command(args: argparse.Namespace) -> int:
    from feedwarden.models.bundle import BundleError
    from feedwarden.models.registry import RegistryError

    _logging()
    try:
        options = _options(args)
        if args.serve:
            asyncio.run(serve(options))
            return EXIT_OK
        outcome = run_once(options)
    except (InputError, BundleError, RegistryError) as exc:
        print(f"feedwarden retrain: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return EXIT_OK
    print(json.dumps(outcome.to_dict(), indent=2))
    print(f"{outcome.status}: {outcome.version or outcome.base_version} — {outcome.reason}", file=sys.stderr)
    return outcome.exit_code


def _rollback_command(args: argparse.Namespace) -> int:
    from feedwarden.models.registry import Registry

    return _announce_promotion(args, "rollback", lambda: Registry(args.registry).rollback(args.reason))


def _promote_command(args: argparse.Namespace) -> int:
    from feedwarden.models.registry import Registry

    def promote() -> Promotion:
        registry = Registry(args.registry)
        current = registry.current()
        if current is not None and current.version == args.version:
            raise InputError(f"{args.version} is already serving")
        return registry.promote(args.version, args.reason)

    return _announce_promotion(args, "promote", promote)


def _announce_promotion(args: argparse.Namespace, command: str, change: Callable[[], Promotion]) -> int:
    from feedwarden.models.bundle import BundleError
    from feedwarden.models.registry import RegistryError
    from feedwarden.models.updates import ModelUpdate

    _logging()
    try:
        promotion = change()
        name = _bundle_name(args.registry, promotion.version)
    except (InputError, RegistryError, BundleError) as exc:
        print(f"feedwarden {command}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    update = ModelUpdate.from_promotion(promotion)
    publish(args.bootstrap, args.updates_topic, name, update)
    print(update.encode().decode())
    return EXIT_OK


def _bundle_name(root: Path, version: str) -> str:
    from feedwarden.models.registry import Registry

    return str(Registry(root).load(version).manifest.name)


def _logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("feedwarden").setLevel(logging.INFO)
