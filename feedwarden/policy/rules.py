"""Per-label rules and the pure `decide` step: scores in, a Decision out.

An action fires for a label when its score is at or above that action's
threshold. A label's action is the most severe one that fires; a post's
action the most severe over its labels (hide > warn > badge > allow).
Scores are reported to SCORE_DECIMALS decimals.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ACTIONS = ("allow", "badge", "warn", "hide")  # least to most severe
SEVERITY = {action: rank for rank, action in enumerate(ACTIONS)}
TIERS = ("critical", "standard", "informational")


SCORE_DECIMALS = 3
# A post's scores differ by up to ~3e-7 between batch compositions (onnxruntime takes
# other kernels for other shapes). A score this close to one of its label's thresholds,
# or a reported score this close to a rounding midpoint, could decide or print
# differently in another batch: `Policy.ambiguous` names such posts, which are then
# scored alone (stream/topology.py: Scorer.decide).
AMBIGUITY_MARGIN = 2e-6


class PolicyError(ValueError):
    """A policy file is malformed or disagrees with the model's labels."""


@dataclass(frozen=True)
class Rule:
    """What to do about one label.

    `thresholds` maps each acting action (hide, warn, badge) to the minimum
    calibrated probability at which it fires; a more severe action needs a
    threshold at least as high as a milder one.
    """

    label: str
    head: str
    thresholds: Mapping[str, float]
    tier: str = "standard"
    fpr_budget: float | None = None

    def __post_init__(self) -> None:
        if not self.thresholds:
            raise PolicyError(f"rule {self.label!r} has no thresholds")
        for action, value in self.thresholds.items():
            if action not in SEVERITY or action == "allow":
                raise PolicyError(f"rule {self.label!r}: unknown action {action!r}")
            if not 0.0 <= float(value) <= 1.0:
                raise PolicyError(f"rule {self.label!r}: {action} threshold {value} not in [0, 1]")
        ordered = sorted(self.thresholds.items(), key=lambda kv: SEVERITY[kv[0]])
        for (mild, low), (severe, high) in zip(ordered, ordered[1:], strict=False):
            if high < low:
                raise PolicyError(
                    f"rule {self.label!r}: {severe} threshold {high} is below {mild} threshold {low}"
                )
        if self.tier not in TIERS:
            raise PolicyError(f"rule {self.label!r}: unknown tier {self.tier!r}")
        if self.fpr_budget is not None and not 0.0 < self.fpr_budget < 1.0:
            raise PolicyError(f"rule {self.label!r}: fpr_budget {self.fpr_budget} not in (0, 1)")

    @property
    def lowest_threshold(self) -> float:
        return min(self.thresholds.values())

    def action_for(self, score: float) -> tuple[str, float] | None:
        """The most severe action whose threshold the score reaches, with that threshold."""
        best: tuple[str, float] | None = None
        for action, threshold in self.thresholds.items():
            if score >= threshold and (best is None or SEVERITY[action] > SEVERITY[best[0]]):
                best = (action, threshold)
        return best


@dataclass(frozen=True)
class LabelHit:
    label: str
    head: str
    score: float
    threshold: float
    action: str


@dataclass(frozen=True)
class Decision:
    action: str
    labels: tuple[LabelHit, ...] = ()


@dataclass(frozen=True)
class Policy:
    version: str
    rules: Mapping[str, Rule] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        try:
            version = str(data["version"])
            rules = {
                label: Rule(
                    label=label,
                    head=str(spec["head"]),
                    thresholds={k: float(v) for k, v in spec["thresholds"].items()},
                    tier=spec.get("tier", "standard"),
                    fpr_budget=spec.get("fpr_budget"),
                )
                for label, spec in data["rules"].items()
            }
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, PolicyError):
                raise
            raise PolicyError(f"malformed policy: {exc!r}") from exc
        return cls(version, rules)

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{path} is not JSON: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rules": {
                label: {
                    "head": r.head,
                    "thresholds": dict(r.thresholds),
                    "tier": r.tier,
                    **({"fpr_budget": r.fpr_budget} if r.fpr_budget is not None else {}),
                }
                for label, r in sorted(self.rules.items())
            },
        }

    def check_labels(self, heads: Mapping[str, Sequence[str]]) -> None:
        """Refuse rules for labels the model does not produce, or on the wrong head."""
        owner = {label: head for head, labels in heads.items() for label in labels}
        for rule in self.rules.values():
            if owner.get(rule.label) != rule.head:
                raise PolicyError(
                    f"rule {rule.label!r} on head {rule.head!r}, "
                    f"but the model gives it {owner.get(rule.label, 'no head')}"
                )

    def decide(self, scores: Mapping[str, float]) -> Decision:
        """Decide one post from its calibrated per-label probabilities."""
        hits = []
        for label, rule in self.rules.items():
            if label not in scores:
                continue
            fired = rule.action_for(float(scores[label]))
            if fired is not None:
                hits.append(LabelHit(label, rule.head, _reported(scores[label]), fired[1], fired[0]))
        return _decision(hits)

    def decide_batch(self, labels: Sequence[str], probs: np.ndarray) -> list[Decision]:
        """Decide many posts at once: `probs[i, j]` is post i's score for `labels[j]`.

        Vectorised per rule, so a batch costs one comparison per rule and
        action plus Python work only for the (few) labels that fire.
        """
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(labels):
            raise ValueError(f"scores of shape {probs.shape} do not match {len(labels)} labels")
        column = {label: j for j, label in enumerate(labels)}
        per_post: list[list[LabelHit]] = [[] for _ in range(probs.shape[0])]
        for label, rule in self.rules.items():
            j = column.get(label)
            if j is None:
                continue
            col = probs[:, j]
            for i in np.flatnonzero(col >= rule.lowest_threshold):
                fired = rule.action_for(float(col[i]))
                assert fired is not None
                per_post[i].append(LabelHit(label, rule.head, _reported(col[i]), fired[1], fired[0]))
        return [_decision(hits) for hits in per_post]

    def ambiguous(self, labels: Sequence[str], probs: np.ndarray) -> np.ndarray:
        """Rows with a score within AMBIGUITY_MARGIN of one of its label's thresholds, or
        a firing score within it of a rounding midpoint of its reported value."""
        probs = np.asarray(probs, dtype=np.float64)
        near = np.zeros(probs.shape[0], bool)
        scale = 10.0**SCORE_DECIMALS
        for j, label in enumerate(labels):
            rule = self.rules.get(label)
            if rule is None:
                continue
            col = probs[:, j]
            for threshold in rule.thresholds.values():
                near |= np.abs(col - threshold) < AMBIGUITY_MARGIN
            midpoint = np.abs(col * scale - np.floor(col * scale) - 0.5) < AMBIGUITY_MARGIN * scale
            near |= midpoint & (col >= rule.lowest_threshold)
        return near


def _reported(score: float) -> float:
    return round(float(score), SCORE_DECIMALS)


def _decision(hits: Iterable[LabelHit]) -> Decision:
    ordered = tuple(sorted(hits, key=lambda h: (-SEVERITY[h.action], -h.score, h.label)))
    return Decision(ordered[0].action if ordered else "allow", ordered)
