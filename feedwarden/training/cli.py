"""`feedwarden train | evaluate | release`: registered into the main CLI by `register`.

torch and the training stack are imported inside the handlers, so the worker's
CLI does not need them.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from feedwarden.training.data import data_root

if TYPE_CHECKING:
    from feedwarden.models.bundle import Bundle


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    train = subparsers.add_parser("train", help="train, export, calibrate and evaluate a candidate bundle")
    train.add_argument("--out", type=Path, default=Path("artifacts/run"), help="run directory")
    train.add_argument(
        "--data", type=Path, default=None, help="data root (default: $FEEDWARDEN_DATA or ../shared/data)"
    )
    train.add_argument("--tiny", action="store_true", help="a few hundred rows and steps (CI)")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--max-length", type=int, default=None)
    train.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds whose models are weight-averaged"
    )
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument(
        "--time-budget-min", type=float, default=None, help="training wall-clock budget per seed"
    )
    train.add_argument("--hate-rows", type=int, default=None, help="TweetEval hate train rows (default 5000)")
    train.add_argument(
        "--offensive-rows", type=int, default=None, help="TweetEval offensive train rows (default 6000)"
    )
    train.add_argument("--mix-cap", type=int, default=None, help="occurrences per label in the mix (2500)")
    train.add_argument("--clean-rows", type=int, default=None, help="clean rows in the mix (4000)")
    train.add_argument(
        "--obfuscated-share",
        type=float,
        default=None,
        help="share of abuse rows added in obfuscated spelling",
    )
    train.add_argument(
        "--target-swap-share",
        type=float,
        default=None,
        help="share of abuse rows naming a target group added with another group named",
    )
    train.add_argument(
        "--release", action="store_true", help="release the bundle as the default if its gates pass"
    )
    train.set_defaults(handler=_train)

    recal = subparsers.add_parser(
        "recalibrate",
        help="refit calibration and thresholds of a finished run on its own calib split (the run's settings)",
    )
    recal.add_argument("--out", type=Path, default=Path("artifacts/run"), help="the run directory")
    recal.add_argument("--data", type=Path, default=None)
    recal.add_argument("--release", action="store_true", help="release the bundle if its gates pass")
    recal.add_argument(
        "--variant", choices=("auto", "int8", "fp32"), default=None, help="force a graph variant"
    )
    recal.set_defaults(handler=_recalibrate)

    evaluate = subparsers.add_parser("evaluate", help="evaluate a bundle on the validation set")
    evaluate.add_argument("bundle", type=Path)
    evaluate.add_argument("--out", type=Path, default=Path("artifacts/evaluation"))
    evaluate.add_argument("--data", type=Path, default=None)
    evaluate.set_defaults(handler=_evaluate)

    release = subparsers.add_parser("release", help="make a candidate bundle the packaged default")
    release.add_argument("bundle", type=Path)
    release.add_argument(
        "--allow-failing-gates", action="store_true", help="release despite failing gates or vectors"
    )
    release.set_defaults(handler=_release)


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from feedwarden.training.config import PipelineConfig

    base = PipelineConfig.tiny() if args.tiny else PipelineConfig()
    mix = {"obfuscated_share": getattr(args, "obfuscated_share", None), "cap": getattr(args, "mix_cap", None),
           "clean_rows": getattr(args, "clean_rows", None),
           "target_swap_share": getattr(args, "target_swap_share", None)}
    base = base.with_overrides(mix=replace(base.mix, **{k: v for k, v in mix.items() if v is not None}))
    seeds = tuple(args.seeds) if args.seeds else None
    return base.with_overrides(
        epochs=args.epochs,
        max_length=args.max_length,
        max_steps=args.max_steps,
        time_budget_s=args.time_budget_min * 60 if getattr(args, "time_budget_min", None) else None,
        seeds=seeds,
        seed=seeds[0] if seeds else None,
        variant=getattr(args, "variant", None),
        hate_train_rows=getattr(args, "hate_rows", None),
        offensive_train_rows=getattr(args, "offensive_rows", None),
    )


def _train(args: argparse.Namespace) -> int:
    from feedwarden.training.pipeline import run

    _logging()
    bundle = run(_config(args), args.data or data_root(), args.out)
    print(f"candidate bundle {bundle.version} at {bundle.path}; report in {args.out / 'report'}")
    if args.release:
        return _publish(bundle.path, allow_failing=False)
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    from feedwarden.training.pipeline import recalibrate, run_config

    _logging()
    config = run_config(args.out).with_overrides(variant=args.variant)
    bundle = recalibrate(config, args.data or data_root(), args.out)
    print(f"recalibrated bundle {bundle.version} at {bundle.path}")
    return _publish(bundle.path, allow_failing=False) if args.release else 0


def _evaluate(args: argparse.Namespace) -> int:
    from feedwarden.training.reevaluate import evaluate_bundle

    _logging()
    report = evaluate_bundle(args.bundle, args.data or data_root(), args.out)
    print(f"report written to {report}")
    return 0


def _release(args: argparse.Namespace) -> int:
    _logging()
    return _publish(args.bundle, allow_failing=args.allow_failing_gates)


def _publish(source: Path, allow_failing: bool) -> int:
    from feedwarden.models.bundle import default_bundle_path, load_bundle

    bundle = load_bundle(source)
    blockers = _release_blockers(bundle)
    if blockers and not allow_failing:
        print(f"refusing to release {bundle.version}: " + "; ".join(blockers))
        return 1
    dest = default_bundle_path()
    staging = dest.with_name(f".{dest.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle.path, staging)
    load_bundle(staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.chmod(0o755)
    staging.rename(dest)
    print(f"released {bundle.version} to {dest}" + (f" ({'; '.join(blockers)})" if blockers else ""))
    return 0


def _release_blockers(bundle: Bundle) -> list[str]:
    """Failing release gates, and regression vectors failing without a known_failure reason."""
    from feedwarden.training.vectors import VECTORS_PATH, load_vectors, run_vectors, summarize

    failing = [lab for lab, status in bundle.manifest.metrics.get("gates", {}).items() if status == "fail"]
    vectors = summarize(run_vectors(bundle, load_vectors()))
    print(f"regression vectors: {vectors['passed']} of {vectors['total']} pass")
    for vector_id in vectors["regressions"]:
        print(f"  {vector_id} fails: " + "; ".join(vectors["failures"][vector_id]))
    if vectors["fixed"]:
        print(f"  known failures that now pass (drop their known_failure): {vectors['fixed']}")
    blockers = [f"gates fail for {failing}"] if failing else []
    if vectors["regressions"]:
        blockers.append(
            f"regression vectors fail for {vectors['regressions']} (a failure to accept needs a "
            f"known_failure reason in {VECTORS_PATH})"
        )
    return blockers


def _logging() -> None:
    """Progress lines from feedwarden at INFO; other libraries (the quantizer logs
    every tensor on the root logger) only from WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("feedwarden").setLevel(logging.INFO)
