"""Tiny bundles with drift references, a registry of them, and a broker-free ModelLoop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from feedwarden.drift import reference_from_scores
from feedwarden.models.bundle import MANIFEST, Bundle, Head, Reference, load_bundle, sha256_file, write_bundle
from feedwarden.models.registry import Registry
from feedwarden.models.updates import ModelUpdate
from feedwarden.stream.app import ModerationService
from feedwarden.stream.loop import ModelLoop, StatsMessage
from feedwarden.stream.metrics import Metrics
from feedwarden.stream.settings import DriftSettings, Settings
from feedwarden.stream.topology import Incoming
from tests.tiny_bundle import POLICY, build_tiny_bundle

EDGES = tuple(i / 10 for i in range(11))
MONITORED = ("scam", "phishing", "spam", "promo", "hate", "offensive", "topic_crypto")  # ruled labels
STATIONARY_SCAM_RATE = 0.02


def tiny_references(n: int = 20_000) -> dict[str, Reference]:
    """References as if calibrated on a stream where 2 % of posts say "scam" and nothing else fires.

    The tiny graph scores a keyword post at ~1 and anything else at ~0.
    """
    refs = {}
    for label in MONITORED:
        rate = STATIONARY_SCAM_RATE if label == "scam" else 0.0
        hits = round(n * rate)
        scores = [0.9997] * hits + [0.0003] * (n - hits)
        threshold = min(POLICY["rules"][label]["thresholds"].values())  # type: ignore[index]
        refs[label] = reference_from_scores(scores, threshold, EDGES)
    return refs


def write_version(root: Path, version: str, *, extra_label: bool = False) -> Bundle:
    """A tiny bundle with references under `root/version` (a registry directory)."""
    source = build_tiny_bundle(root.parent / f".src-{root.name}-{version}")
    manifest = replace(source.manifest, version=version, reference=tiny_references())
    if extra_label:  # the graph gives 6 safety scores; this manifest claims 7
        safety = manifest.head("safety")
        heads = (Head("safety", safety.output, (*safety.labels, "extra")), manifest.head("topic"))
        manifest = replace(manifest, heads=heads, calibration={**manifest.calibration, "extra": (1.0, 0.0)})
    sources = {name: source.path / name for name in ("model.onnx", "tokenizer.json", "policy.json")}
    return write_bundle(root / version, manifest, sources)


def update(registry: Registry, version: str, event: str = "promote", **changes: Any) -> bytes:
    digest = sha256_file(registry.path_of(version) / MANIFEST)
    fields = {"version": version, "manifest_sha256": digest, "event": event, "reason": "test",
              "at": "2026-11-22T02:00:00+00:00", **changes}
    return ModelUpdate(**fields).encode()


@dataclass
class Sent:
    """What the loop published, by topic."""

    records: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)

    async def __call__(self, topic: str, key: str | bytes, value: Any) -> None:
        self.records.setdefault(topic, []).append((key, value))

    def stats(self) -> list[StatsMessage]:
        return [value for _, value in self.records.get("drift.stats", [])]

    def json(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(value) for _, value in self.records.get(topic, [])]


def make_loop(registry_root: Path, serving: str = "v1", **drift: Any) -> tuple[ModelLoop, Sent]:
    bundle = load_bundle(registry_root / serving)
    drift_settings = DriftSettings(registry=registry_root, **drift)
    settings = Settings(bundle=bundle.path, providers="cpu", drift=drift_settings)
    sent = Sent()
    return ModelLoop(ModerationService(settings, Metrics()), sent), sent


def incoming(texts: list[str], start: int = 0) -> list[Incoming]:
    return [
        Incoming(orjson.dumps({"id": f"p{start + i}", "text": text}), "posts", 0, start + i, None)
        for i, text in enumerate(texts)
    ]


async def _ack(record: Any) -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def run_batch(loop: ModelLoop, texts: list[str], start: int = 0) -> Any:
    """One batch through the service and the loop's hook; returns the serving report."""
    service = loop.service
    service.on_batch = loop.on_batch
    events = [_Event(message) for message in incoming(texts, start)]
    return asyncio.run(service.handle(events, _ack))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Event:
    message: Incoming
