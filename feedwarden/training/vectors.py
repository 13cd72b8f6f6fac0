"""The regression suite: hand-written posts a released bundle must get right.

Each vector names labels that must fire (`fires`), of which one must fire
(`fires_any`) or that must stay quiet (`quiet`), judged at each label's lowest
threshold (warn for safety labels, badge for topics). A vector the released
bundle is known to fail carries the reason in `known_failure`; `feedwarden
release` refuses a candidate that fails any other vector.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedwarden.models.bundle import Bundle
from feedwarden.policy.rules import Policy

VECTORS_PATH = Path(__file__).with_name("regression_vectors.jsonl")
KINDS = frozenset(
    {"positive", "hard_negative", "obfuscated", "multi_label", "cross_domain", "functional_hate"}
)
_FIELDS = frozenset({"id", "kind", "text", "fires", "fires_any", "quiet", "known_failure"})


@dataclass(frozen=True)
class Vector:
    id: str
    kind: str
    text: str
    fires: tuple[str, ...] = ()
    fires_any: tuple[str, ...] = ()
    quiet: tuple[str, ...] = ()
    known_failure: str | None = None

    def labels(self) -> frozenset[str]:
        return frozenset(self.fires) | frozenset(self.fires_any) | frozenset(self.quiet)


@dataclass(frozen=True)
class Outcome:
    vector: Vector
    problems: tuple[str, ...]  # one line per broken expectation; empty when the vector passes

    @property
    def passed(self) -> bool:
        return not self.problems


def load_vectors(path: Path = VECTORS_PATH) -> list[Vector]:
    """Parse and validate the suite; errors name the file and line."""
    vectors: list[Vector] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            vectors.append(_vector(json.loads(line), f"{path}:{number}"))
    ids = [v.id for v in vectors]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate vector ids {sorted({i for i in ids if ids.count(i) > 1})}")
    return vectors


def _vector(raw: Any, where: str) -> Vector:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a vector is a JSON object")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    for name in ("id", "kind", "text"):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise ValueError(f"{where}: `{name}` must be a non-empty string")
    if raw["kind"] not in KINDS:
        raise ValueError(f"{where}: kind {raw['kind']!r} is not one of {sorted(KINDS)}")
    lists = {name: raw.get(name, []) for name in ("fires", "fires_any", "quiet")}
    for name, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(label, str) for label in value):
            raise ValueError(f"{where}: `{name}` must be a list of label names")
    if not any(lists.values()):
        raise ValueError(f"{where}: a vector needs `fires`, `fires_any` or `quiet`")
    reason = raw.get("known_failure")
    if reason is not None and (not isinstance(reason, str) or not reason):
        raise ValueError(f"{where}: `known_failure` must be a non-empty reason")
    return Vector(
        raw["id"],
        raw["kind"],
        raw["text"],
        fires=tuple(lists["fires"]),
        fires_any=tuple(lists["fires_any"]),
        quiet=tuple(lists["quiet"]),
        known_failure=reason,
    )


def thresholds(policy: Policy) -> dict[str, float]:
    """Each label's lowest threshold: where it starts to act (warn or badge)."""
    return {label: rule.lowest_threshold for label, rule in policy.rules.items()}


def check(vector: Vector, scores: Mapping[str, float], cutoffs: Mapping[str, float]) -> Outcome:
    """Judge one vector on one post's calibrated scores."""
    missing = vector.labels() - set(cutoffs)
    if missing:
        return Outcome(vector, (f"the bundle has no label {sorted(missing)}",))
    fired = {label for label in vector.labels() if scores[label] >= cutoffs[label]}

    def shown(label: str) -> str:
        return f"{label} {scores[label]:.3f} (threshold {cutoffs[label]:.3f})"

    problems = [f"{shown(label)} should fire" for label in vector.fires if label not in fired]
    if vector.fires_any and not fired & set(vector.fires_any):
        closest = max(vector.fires_any, key=lambda label: scores[label] - cutoffs[label])
        problems.append(f"one of {list(vector.fires_any)} should fire; closest {shown(closest)}")
    problems += [f"{shown(label)} should stay quiet" for label in vector.quiet if label in fired]
    return Outcome(vector, tuple(problems))


def run_vectors(bundle: Bundle, vectors: Sequence[Vector], policy: Policy | None = None) -> list[Outcome]:
    """Score every vector with the serving engine, judged by the bundle's own policy or by
    `policy` (a candidate's not yet written: the bundle then carries its calibration)."""
    from feedwarden.models.engine import Engine

    scores = Engine(bundle, providers="cpu").score([v.text for v in vectors])
    cutoffs = thresholds(policy or Policy.from_file(bundle.policy_path))
    return [check(v, scores.row(i), cutoffs) for i, v in enumerate(vectors)]


def regressions(serving: Bundle, candidate: Bundle, policy: Policy | None = None) -> dict[str, list[str]]:
    """The vectors the serving bundle passes and the candidate fails, with the candidate's problems."""
    vectors = load_vectors()
    passing = {o.vector.id for o in run_vectors(serving, vectors) if o.passed}
    return {
        o.vector.id: list(o.problems)
        for o in run_vectors(candidate, vectors, policy)
        if not o.passed and o.vector.id in passing
    }


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Counts, the failures a release must not have (`regressions`), known failures that now
    pass (`fixed`), and every failure with its reasons."""
    failed = [o for o in outcomes if not o.passed]
    return {
        "passed": len(outcomes) - len(failed),
        "total": len(outcomes),
        "regressions": [o.vector.id for o in failed if o.vector.known_failure is None],
        "fixed": [o.vector.id for o in outcomes if o.passed and o.vector.known_failure is not None],
        "failures": {o.vector.id: list(o.problems) for o in failed},
    }
