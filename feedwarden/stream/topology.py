"""The moderation topology as a pure function over one micro-batch.

`Moderator.moderate_batch` turns consumed messages into the records to
produce (decisions, per-action copies, dead letters) plus what metrics and
drift need. It touches no broker and no event loop, so it is unit-tested
directly and run in an executor thread by the agent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Encoding

from feedwarden import times
from feedwarden.models.bundle import load_bundle
from feedwarden.models.engine import Engine
from feedwarden.policy import Decision, Policy
from feedwarden.stream.records import (
    UNTOKENIZABLE,
    Invalid,
    Post,
    decode_post,
    encode_dead_letter,
    encode_decision,
)
from feedwarden.stream.settings import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """A consumed message, independent of the Kafka client that read it."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None  # broker timestamp, seconds since the epoch


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Decided:
    post_id: str
    decision: Decision
    timestamp: float | None


@dataclass
class BatchReport:
    """The records to produce for a batch, and what happened, for metrics and drift."""

    outgoing: list[Outgoing] = field(default_factory=list)
    decided: list[Decided] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)  # error codes
    labels: tuple[str, ...] = ()
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # row per `decided`
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scored:
    """Decisions for the valid posts of a batch, by their index in the batch."""

    decisions: dict[int, Decision]
    labels: tuple[str, ...]
    probs: np.ndarray  # one row per decision, in ascending index order


class Scorer:
    """Engine + policy: posts in, decisions out. Shared by the worker and offline scoring."""

    def __init__(self, engine: Engine, policy: Policy) -> None:
        policy.check_labels(engine.labels)
        self.engine = engine
        self.policy = policy
        self.model = {head: engine.bundle.version for head in engine.labels}

    @classmethod
    def from_bundle(
        cls, path: str | Path, *, threads: int | None = None, providers: str = "auto"
    ) -> Scorer:
        """Load and verify a bundle, open its graph and its policy."""
        bundle = load_bundle(path)
        engine = Engine(bundle, threads=threads, providers=providers)
        return cls(engine, Policy.from_file(bundle.policy_path))

    def decide(self, results: list[Post | Invalid], stage_seconds: dict[str, float]) -> Scored:
        """Score and decide the Posts among `results`, timing each stage into `stage_seconds`.

        A post the tokenizer refuses is replaced by an Invalid in `results`.
        """
        started = time.perf_counter()
        encodings = self._tokenize(results)
        stage_seconds["tokenize"] = time.perf_counter() - started
        if not encodings:
            return Scored({}, (), np.zeros((0, 0), np.float32))
        started = time.perf_counter()
        encoded = list(encodings.values())
        labels, probs = self.engine.score_encoded(encoded).flat()
        ambiguous = np.flatnonzero(self.policy.ambiguous(labels, probs))
        if ambiguous.size:  # a score its batch could have moved across a boundary: score alone
            alone = [encoded[i] for i in ambiguous]
            probs[ambiguous] = self.engine.score_encoded(alone, alone=True).flat()[1]
        stage_seconds["infer"] = time.perf_counter() - started
        started = time.perf_counter()
        decisions = self.policy.decide_batch(labels, probs)
        stage_seconds["policy"] = time.perf_counter() - started
        return Scored(dict(zip(encodings, decisions, strict=True)), labels, probs)

    def _tokenize(self, results: list[Post | Invalid]) -> dict[int, Encoding]:
        """Encodings by index, batched; one post at a time only if the batch fails."""
        posts = {i: r for i, r in enumerate(results) if isinstance(r, Post)}
        if not posts:
            return {}
        try:
            return dict(zip(posts, self.engine.tokenize([p.text for p in posts.values()]), strict=True))
        except Exception:  # noqa: BLE001 - find the post at fault below
            log.warning("batch tokenization failed; retrying post by post")
        encodings = {}
        for index, post in posts.items():
            try:
                encodings[index] = self.engine.tokenize([post.text])[0]
            except Exception as exc:  # noqa: BLE001 - the post's text is at fault
                results[index] = Invalid(UNTOKENIZABLE, f"tokenizer refused the text: {exc}"[:200])
        return encodings


class Moderator:
    """Decoding, scoring and topic routing: the whole per-batch step of the worker."""

    def __init__(
        self,
        scorer: Scorer,
        topics: Topics,
        *,
        max_text_chars: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scorer = scorer
        self.topics = topics
        self.max_text_chars = max_text_chars
        self.clock = clock

    def moderate_batch(self, messages: Sequence[Incoming]) -> BatchReport:
        """Decide every valid post and dead-letter every invalid one; never raises on input."""
        report = BatchReport()
        started = time.perf_counter()
        results: list[Post | Invalid] = [
            decode_post(m.value, max_text_chars=self.max_text_chars) for m in messages
        ]
        report.stage_seconds["decode"] = time.perf_counter() - started
        scored = self.scorer.decide(results, report.stage_seconds)
        report.labels, report.scores = scored.labels, scored.probs
        started = time.perf_counter()
        for index, (message, result) in enumerate(zip(messages, results, strict=True)):
            if isinstance(result, Post):
                self._emit_decision(message, result, scored.decisions[index], report)
            else:
                self._emit_dead_letter(message, result, report)
        report.stage_seconds["produce"] = time.perf_counter() - started
        return report

    def _emit_decision(self, message: Incoming, post: Post, decision: Decision, report: BatchReport) -> None:
        latency_ms = 0.0 if message.timestamp is None else max(0.0, (self.clock() - message.timestamp) * 1000)
        value = encode_decision(
            post.id, decision, model=self.scorer.model, policy_version=self.scorer.policy.version,
            decided_at=times.format_epoch(), latency_ms=latency_ms,
        )
        key = post.id.encode("utf-8")
        report.outgoing.append(Outgoing(self.topics.decisions, key, value))
        action_topic = self.topics.for_action(decision.action)
        if action_topic is not None:
            report.outgoing.append(Outgoing(action_topic, key, value))
        report.decided.append(Decided(post.id, decision, message.timestamp))

    def _emit_dead_letter(self, message: Incoming, invalid: Invalid, report: BatchReport) -> None:
        value = encode_dead_letter(
            invalid, message.value, topic=message.topic, partition=message.partition, offset=message.offset
        )
        key = f"{message.topic}/{message.partition}/{message.offset}".encode()
        report.outgoing.append(Outgoing(self.topics.dlq, key, value))
        report.dead_letters.append(invalid.error)
