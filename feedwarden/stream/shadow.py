"""Shadow scoring: a candidate bundle decides every batch too, and is never acted on.

After a batch's serving decisions are produced, the same messages are scored
by the candidate; its decisions go to the shadow topic only, and per label
the share of posts each bundle flags (any action fired) is compared on the
very same posts. `feedwarden promote VERSION` ends the comparison by
promoting the candidate; any promotion drops the shadow.

Cost: the candidate runs on the same inference thread right after the
serving model, before the batch is acked, so while a shadow is loaded each
batch takes about twice the inference time (end-to-end latency up, capacity
about halved). Done in line on purpose: a fire-and-forget shadow would
queue without bound once the worker runs near capacity. The cost shows as
`feedwarden_batch_stage_seconds{stage="shadow"}`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from feedwarden.policy import Decision
from feedwarden.stream.topology import BatchReport, Incoming, Moderator
from feedwarden.times import format_epoch


@dataclass
class Comparison:
    """Serving vs shadow on the same posts since the shadow was loaded."""

    shadow_version: str
    serving_version: str
    since: float = field(default_factory=time.time)
    posts: int = 0
    same_action: int = 0
    serving_flags: Counter[str] = field(default_factory=Counter)
    shadow_flags: Counter[str] = field(default_factory=Counter)

    def add(self, serving: BatchReport, shadow: BatchReport) -> None:
        """Count the posts both bundles decided (a post one tokenizer refused is left out)."""
        theirs = {d.post_id: d.decision for d in shadow.decided}
        for decided in serving.decided:
            other = theirs.get(decided.post_id)
            if other is None:
                continue
            self.posts += 1
            self.same_action += decided.decision.action == other.action
            self.serving_flags.update(_flagged(decided.decision))
            self.shadow_flags.update(_flagged(other))

    def rates(self) -> dict[str, tuple[float, float]]:
        """label -> (serving flag rate, shadow flag rate)."""
        n = max(1, self.posts)
        labels = sorted(self.serving_flags.keys() | self.shadow_flags.keys())
        return {label: (self.serving_flags[label] / n, self.shadow_flags[label] / n) for label in labels}

    def agreement(self) -> float:
        return self.same_action / self.posts if self.posts else 1.0

    def summary(self) -> dict[str, Any]:
        return {
            "shadow_version": self.shadow_version,
            "serving_version": self.serving_version,
            "since": format_epoch(self.since),
            "posts": self.posts,
            "action_agreement": self.agreement(),
            "labels": {
                label: {"serving_rate": ours, "shadow_rate": theirs, "difference": theirs - ours}
                for label, (ours, theirs) in self.rates().items()
            },
        }


def _flagged(decision: Decision) -> set[str]:
    return {hit.label for hit in decision.labels}


@dataclass
class Shadow:
    """The candidate's moderator (publishing only to the shadow topic) and its comparison."""

    moderator: Moderator
    comparison: Comparison

    @property
    def version(self) -> str:
        return self.moderator.scorer.engine.bundle.version

    def decide(self, messages: Sequence[Incoming]) -> BatchReport:
        """Decide `messages` with the candidate (blocking: run it in the inference thread).

        Only records for the shadow topic are kept: the candidate's dead
        letters and per-action copies would duplicate the serving ones.
        """
        report = self.moderator.moderate_batch(messages)
        shadow_topic = self.moderator.topics.decisions
        report.outgoing = [r for r in report.outgoing if r.topic == shadow_topic]
        return report
