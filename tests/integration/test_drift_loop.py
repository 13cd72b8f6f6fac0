"""The closed loop on a real broker: drift -> alert -> retrain request -> retrain job -> hot swap.

One worker and one `feedwarden retrain --serve` process, both real
subprocesses, with 8-second windows. A stationary phase resamples the
released bundle's own reference posts (the base-rate calibration rows its
drift references were measured on), then a shifted phase mixes in 30 % scam
posts. Expected: no scam-bucket alert while stationary; a scam-bucket alert on
drift.alerts, then a retrain.requests event; the retrain job recalibrates and
announces a new version on model.updates, and the same worker process decides
the next posts with it.

Needs the labelled data (`$FEEDWARDEN_DATA`, default `<repo>/../shared/data`)
and the released bundle; skipped, saying which, when either is absent.
About 2.5 minutes on two busy cores, most of it the retrain job.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from feedwarden.models.bundle import load_bundle
from feedwarden.models.updates import decode
from feedwarden.stream.broker import create_topics
from feedwarden.stream.settings import Topics
from tests.integration.helpers import Collector, Worker, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.data]

WINDOW_S = 8
MIN_POSTS = 150
POSTS_PER_SECOND = 30
STATIONARY_WINDOWS = 4
SCAM_SHARE = 0.3
SCAM_BUCKET = {"scam", "phishing", "recovery_scam"}  # the bundle's scam-bucket labels


def _reference_texts(data: Path, bundle: Path) -> list[str]:
    """The rows the bundle's drift references were measured on: the base-rate part (Janitr and
    presumed clean) of the calib split its recorded training settings produce."""
    from feedwarden.training.config import PipelineConfig
    from feedwarden.training.pipeline import REFERENCE_SOURCES
    from feedwarden.training.recalibration import load_pools

    config = PipelineConfig.from_dict(load_bundle(bundle).manifest.metrics.get("config"))
    return [row.text for row in load_pools(data, config).calib if row.source in REFERENCE_SOURCES]


def _scam_texts(data: Path) -> list[str]:
    rows = [json.loads(line) for line in (data / "janitr" / "train.jsonl").read_text().splitlines()]
    return [row["text"] for row in rows if SCAM_BUCKET & set(row["labels"])]


class Feed:
    """Posts at a steady rate, switchable between phases, until stopped."""

    def __init__(self, bootstrap: str, topic: str, texts: Iterator[str]) -> None:
        self.bootstrap, self.topic, self.texts = bootstrap, topic, texts
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        tick = 0.25
        try:
            while True:
                started = time.monotonic()
                for _ in range(round(POSTS_PER_SECOND * tick)):
                    post = {"id": f"p{self.sent}", "text": next(self.texts)}
                    await producer.send(self.topic, orjson.dumps(post))
                    self.sent += 1
                await asyncio.sleep(max(0.0, tick - (time.monotonic() - started)))
        finally:
            await producer.stop()


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _loaded(collector: Collector, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(value) for _, value in list(collector.records[topic])]


async def _until_window_boundary() -> None:
    await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)


def test_drift_requests_a_retrain_and_the_same_worker_serves_the_result(
    kafka_bootstrap: str, data: Path, bundle: Path, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    topics = Topics(*(f"{name}-{run}" for name in Topics().all()))
    loop_topics = {
        "FEEDWARDEN_TOPIC_DRIFT_STATS": f"drift.stats-{run}",
        "FEEDWARDEN_TOPIC_DRIFT_ALERTS": f"drift.alerts-{run}",
        "FEEDWARDEN_TOPIC_RETRAIN_REQUESTS": f"retrain.requests-{run}",
        "FEEDWARDEN_TOPIC_MODEL_UPDATES": f"model.updates-{run}",
        "FEEDWARDEN_TOPIC_SHADOW": f"decisions.shadow-{run}",
    }
    registry = tmp_path / "registry"
    env = worker_env(kafka_bootstrap, topics, bundle, f"drift-{run}", 1) | loop_topics | {
        "FEEDWARDEN_REGISTRY": str(registry),
        "FEEDWARDEN_DRIFT_WINDOW_SECONDS": str(WINDOW_S),
        "FEEDWARDEN_DRIFT_MIN_POSTS": str(MIN_POSTS),
        "FEEDWARDEN_DRIFT_SUSTAIN_K": "2",
        "FEEDWARDEN_DRIFT_SUSTAIN_M": "3",
    }
    asyncio.run(create_topics(kafka_bootstrap, [topics.posts, *loop_topics.values()]))
    worker = Worker(env, tmp_path / "worker.log")
    retrain = _retrain_service(kafka_bootstrap, data, bundle, registry, loop_topics, run,
                               tmp_path / "retrain.log")
    worker.start()
    try:
        asyncio.run(worker.wait_ready(90))
        version = load_bundle(bundle).version
        stationary, scams = _reference_texts(data, bundle), _scam_texts(data)
        figures = asyncio.run(_scenario(kafka_bootstrap, topics, loop_topics, (stationary, scams), version,
                                        worker))
    finally:
        worker.stop()
        retrain.terminate()
        retrain.wait(20)
    print(f"\ndrift loop figures: {figures}")


def _retrain_service(
    bootstrap: str, data: Path, bundle: Path, registry: Path, topics: dict[str, str], run: str, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "feedwarden.cli", "retrain", "--serve", "--data", str(data),
        "--bundle", str(bundle), "--registry", str(registry), "--bootstrap", bootstrap,
        "--requests-topic", topics["FEEDWARDEN_TOPIC_RETRAIN_REQUESTS"],
        "--updates-topic", topics["FEEDWARDEN_TOPIC_MODEL_UPDATES"],
        "--feedback-topic", f"feedback-{run}", "--feedback-timeout", "3",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


async def _scenario(
    bootstrap: str,
    topics: Topics,
    loop_topics: dict[str, str],
    texts: tuple[list[str], list[str]],
    base_version: str,
    worker: Worker,
) -> dict[str, Any]:
    alerts_topic = loop_topics["FEEDWARDEN_TOPIC_DRIFT_ALERTS"]
    requests_topic = loop_topics["FEEDWARDEN_TOPIC_RETRAIN_REQUESTS"]
    updates_topic = loop_topics["FEEDWARDEN_TOPIC_MODEL_UPDATES"]
    stationary, scams = texts
    async with Collector(bootstrap, (topics.decisions, alerts_topic, requests_topic, updates_topic)) as seen:
        await _until_window_boundary()
        phase = {"scam_share": 0.0}
        feed = Feed(bootstrap, topics.posts, _phased(stationary, scams, phase))
        feed.start()
        await asyncio.sleep(STATIONARY_WINDOWS * WINDOW_S)
        await _until_window_boundary()
        shift_at = time.time()
        phase["scam_share"] = SCAM_SHARE

        def scam_alerts() -> list[dict[str, Any]]:
            return [a for a in _loaded(seen, alerts_topic) if a["label"] in SCAM_BUCKET]

        await seen.wait_for(lambda: bool(scam_alerts()), 60, "a scam-bucket drift alert")
        alert_delay = time.time() - shift_at
        await seen.wait_for(lambda: bool(seen.records[requests_topic]), 60, "a retrain request")
        request_delay = time.time() - shift_at
        await feed.stop()  # two shared cores: let the retrain job have them
        await seen.wait_for(lambda: bool(seen.records[updates_topic]), 240, "the retrain job's model.updates")
        update = decode(seen.records[updates_topic][-1][1])
        retrain_s = time.time() - shift_at - request_delay
        swap_started = time.time()
        feed.start()

        def new_version_decisions() -> int:
            return sum(1 for d in _loaded(seen, topics.decisions) if d["model"]["safety"] == update.version)

        await seen.wait_for(lambda: new_version_decisions() > 0, 60, f"decisions by {update.version}")
        swap_delay = time.time() - swap_started
        await feed.stop()

        alerts = _loaded(seen, alerts_topic)
        early = [a for a in alerts if _epoch(a["window_end"]) <= shift_at + 0.5]
        assert not [a for a in early if a["label"] in SCAM_BUCKET], f"scam alarm while stationary: {early}"
        first = scam_alerts()[0]
        assert first["n"] >= MIN_POSTS
        # The first alert may be a histogram shift on a label nobody crosses the threshold of
        # (reference and observed rate both 0); more posts must be flagged on some scam label.
        rising = [a for a in scam_alerts() if a["observed_rate"] > a["reference_rate"]]
        assert rising, f"no scam-bucket alert with a higher flagged rate: {scam_alerts()}"
        request = json.loads(seen.records[requests_topic][0][1])
        assert SCAM_BUCKET & set(request["labels"]) and request["model_version"] == base_version
        assert (update.event, update.request) == ("promote", request)
        status, body = await asyncio.to_thread(worker.get, "/readyz")
        assert status == 200 and json.loads(body)["bundle"] == update.version
        _, metrics = await asyncio.to_thread(worker.get, "/metrics")
        assert "feedwarden_bundle_swaps_total 1.0" in metrics
        return {
            "posts": feed.sent, "stationary_windows_alerting": sorted({a["window_start"] for a in early}),
            "alert_delay_s": round(alert_delay, 1), "request_delay_s": round(request_delay, 1),
            "retrain_job_s": round(retrain_s, 1), "swap_after_update_s": round(swap_delay, 1),
            "first_alert": first, "new_version": update.version,
        }


def _phased(stationary: list[str], scams: list[str], phase: dict[str, float]) -> Iterator[str]:
    rng = random.Random(7)
    while True:
        yield rng.choice(scams) if rng.random() < phase["scam_share"] else rng.choice(stationary)
