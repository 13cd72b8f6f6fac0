"""The `feedback` topic contract: moderator verdicts on the model's decisions.

One JSON object per message (key: the post id, optional)::

    {"post_id": "123",                        # non-empty string
     "text": "the post's text",               # non-empty string
     "labels": ["scam", "topic_crypto"],      # head label names the verdict is about
     "verdict": "confirm" | "overturn",
     "at": "2026-11-22T01:00:00Z"}            # RFC 3339, when the moderator decided

`confirm` says the post has every listed label; `overturn` says it has none
of them (a false positive). Nothing is said about other labels, so a verdict
row trains and tunes only the labels it lists (plus the scam_or_spam umbrella
when a confirmed label is in the scam bucket). Labels the bundle does not
produce are ignored; a record left with none is skipped. When a post has
several verdicts the latest `at` wins. Unknown fields are ignored.

Verdict rows are split by a hash of the post id: one half joins the
calibration set (tuning), the other the gate set, so a post never both tunes
a threshold and judges it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from feedwarden import times
from feedwarden.training.data import Example
from feedwarden.training.views import SCAM_BUCKET, UMBRELLA, SourceView, TaskView

log = logging.getLogger(__name__)

FEEDBACK_TOPIC = "feedback"
VERDICTS = ("confirm", "overturn")
SOURCE_PREFIX = "feedback/"


class FeedbackError(ValueError):
    """A feedback record breaks the contract."""


@dataclass(frozen=True)
class Verdict:
    post_id: str
    text: str
    labels: tuple[str, ...]
    verdict: str
    at: str

    def __post_init__(self) -> None:
        for name in ("post_id", "text"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise FeedbackError(f"{name} must be a non-empty string")
        if not self.labels or not all(isinstance(x, str) and x for x in self.labels):
            raise FeedbackError("labels must be a non-empty list of label names")
        if self.verdict not in VERDICTS:
            raise FeedbackError(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        _timestamp(self.at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "post_id": self.post_id,
            "text": self.text,
            "labels": list(self.labels),
            "verdict": self.verdict,
            "at": self.at,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_dict()).encode()


def decode(raw: bytes | str) -> Verdict:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FeedbackError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FeedbackError(f"record is {type(data).__name__}, expected an object")
    labels = data.get("labels")
    if not isinstance(labels, list):
        raise FeedbackError("labels must be a list")
    try:
        return Verdict(data["post_id"], data["text"], tuple(labels), data["verdict"], data["at"])
    except KeyError as exc:
        raise FeedbackError(f"missing field {exc}") from exc


def _timestamp(value: object) -> datetime:
    try:
        return times.parse(value)
    except ValueError as exc:
        raise FeedbackError(f"at: {exc}") from exc


def latest(verdicts: Iterable[Verdict]) -> list[Verdict]:
    """One verdict per post: the latest by `at` (the later record on ties)."""
    chosen: dict[str, Verdict] = {}
    for verdict in verdicts:
        seen = chosen.get(verdict.post_id)
        if seen is None or _timestamp(verdict.at) >= _timestamp(seen.at):
            chosen[verdict.post_id] = verdict
    return list(chosen.values())


def half(post_id: str) -> str:
    """`calib` or `valid`, fixed by the post id."""
    return ("calib", "valid")[hashlib.sha256(post_id.encode()).digest()[0] % 2]


def to_example(verdict: Verdict, view: TaskView) -> Example | None:
    """A labelled row annotating only the verdict's labels (None if the bundle knows none)."""
    annotated = {label for label in verdict.labels if label in view.labels}
    if not annotated:
        return None
    if verdict.verdict == "confirm" and annotated & SCAM_BUCKET and UMBRELLA in view.labels:
        annotated.add(UMBRELLA)
    labels = frozenset(annotated) if verdict.verdict == "confirm" else frozenset()
    return Example(
        id=f"feedback:{verdict.post_id}",
        text=verdict.text,
        labels=labels,
        source=SOURCE_PREFIX + "+".join(sorted(annotated)),
        split=half(verdict.post_id),
        meta={"verdict": verdict.verdict, "at": verdict.at},
    )


def with_feedback_sources(view: TaskView, rows: Sequence[Example]) -> TaskView:
    """`view` plus one source per distinct annotated label set among feedback rows."""
    extra: dict[str, SourceView] = {}
    for row in rows:
        if row.source.startswith(SOURCE_PREFIX) and row.source not in view.sources:
            annotated = frozenset(row.source.removeprefix(SOURCE_PREFIX).split("+"))
            extra[row.source] = SourceView(row.source, {lab: (lab,) for lab in annotated}, annotated)
    return replace(view, sources={**view.sources, **extra}) if extra else view


@dataclass(frozen=True)
class FeedbackRead:
    verdicts: list[Verdict]
    records: int
    invalid: int

    def summary(self) -> Mapping[str, int]:
        return {"records": self.records, "invalid": self.invalid, "posts": len(self.verdicts)}


async def read_feedback(
    bootstrap: str, topic: str = FEEDBACK_TOPIC, *, idle_s: float = 3.0, timeout_s: float = 30.0
) -> FeedbackRead:
    """Every verdict on `topic`, read from the earliest offset without a consumer group.

    The end is when nothing arrived for `idle_s` (broker "latest" offsets are
    not trusted), or `timeout_s` passed in total.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < idle_s:
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                values.extend(m.value or b"" for m in messages)
            if batch:
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return parse(values)


def parse(values: Sequence[bytes]) -> FeedbackRead:
    verdicts, invalid = [], 0
    for value in values:
        try:
            verdicts.append(decode(value))
        except FeedbackError as exc:
            invalid += 1
            log.warning("skipping feedback record: %s", exc)
    return FeedbackRead(latest(verdicts), len(values), invalid)
