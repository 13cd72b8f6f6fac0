"""`feedwarden retrain --once` and `rollback` against a real broker, the released bundle and real data.

Needs the labelled data (`$FEEDWARDEN_DATA`, default `<repo>/../shared/data`)
and a released bundle (`$FEEDWARDEN_TEST_BUNDLE`, default the packaged one);
skipped, saying which, when either is absent. About a minute on two cores:
the job scores the calib and gate sets (~7k posts) with the real graph.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from feedwarden.models.bundle import load_bundle
from feedwarden.models.registry import Registry
from feedwarden.models.updates import decode
from feedwarden.policy import Policy
from feedwarden.stream.broker import create_topics
from feedwarden.training.feedback import Verdict
from tests.integration.helpers import produce

pytestmark = [pytest.mark.integration, pytest.mark.data]
# fb-1 and fb-2 fall in the calib half, fb-3 in the gate half (`feedback.half`). The
# confirmation stays out of the gate set: with it would come ~19 presumed-clean fill rows,
# enough to move a label the release passed by a hair (promo's PR-AUC sits near 0.3).
VERDICTS = [
    Verdict(
        "fb-1",
        "Claim your free BTC now, send 0.1 to double it!!",
        ("scam",),
        "confirm",
        "2026-11-22T01:00:00Z",
    ),
    Verdict(
        "fb-2",
        "Lovely sunset at the beach with the kids today",
        ("spam",),
        "overturn",
        "2026-11-22T01:01:00Z",
    ),
    Verdict(
        "fb-3",
        "Our bake sale raised money for the school library",
        ("scam",),
        "overturn",
        "2026-11-22T01:02:00Z",
    ),
]


def _cli(*args: str, timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedwarden.cli", *args], capture_output=True, text=True, timeout=timeout
    )


async def _read_all(
    bootstrap: str, topic: str, want: int, timeout: float = 20.0
) -> list[tuple[bytes, bytes]]:
    """Every record on `topic` from the earliest offset: at least `want`, then 2 s of quiet."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[tuple[bytes, bytes]] = []
    try:
        deadline, quiet = time.monotonic() + timeout, time.monotonic()
        while time.monotonic() < deadline and (len(records) < want or time.monotonic() - quiet < 2.0):
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                records += [(m.key or b"", m.value or b"") for m in messages]
            if batch:
                quiet = time.monotonic()
    finally:
        await consumer.stop()
    return records


def test_retrain_once_promotes_announces_and_rolls_back(
    kafka_bootstrap: str, data: Path, bundle: Path, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    updates, feedback = f"model.updates.{suffix}", f"feedback.{suffix}"
    registry = tmp_path / "registry"
    asyncio.run(create_topics(kafka_bootstrap, [feedback, updates]))
    records: list[tuple[bytes | None, bytes]] = [(v.post_id.encode(), v.encode()) for v in VERDICTS]
    records.append((None, b"{broken"))
    asyncio.run(produce(kafka_bootstrap, feedback, records))
    common = ("--registry", str(registry), "--bootstrap", kafka_bootstrap, "--updates-topic", updates)

    started = time.monotonic()
    job = _cli(
        "retrain",
        "--once",
        "--data",
        str(data),
        "--bundle",
        str(bundle),
        "--feedback-topic",
        feedback,
        "--feedback-timeout",
        "10",
        *common,
    )
    elapsed = time.monotonic() - started
    base = load_bundle(bundle)
    tiers = {label: rule.tier for label, rule in Policy.from_file(base.policy_path).rules.items()}
    failing = sorted(
        lab for lab, status in base.manifest.metrics.get("gates", {}).items()
        if status == "fail" and tiers.get(lab) == "critical"
    )
    if failing:  # critical gates fail as released: recalibrating on the same data must refuse to publish
        assert job.returncode == 3, (
            f"exit {job.returncode}; released gates fail for {failing}\n{job.stderr[-3000:]}"
        )
        assert asyncio.run(_read_all(kafka_bootstrap, updates, want=0, timeout=3)) == []
        assert Registry(registry).versions() == []
        pytest.skip(
            f"released bundle fails its gates for {failing}: refusal checked, promotion not reachable"
        )
    assert job.returncode == 0, f"exit {job.returncode}: {job.stderr[-3000:]}"
    outcome = json.loads(job.stdout)
    assert outcome["details"]["feedback"] == {"records": 4, "invalid": 1, "posts": 3, "usable": 3}
    print(f"retrain --once took {elapsed:.1f}s; thresholds {outcome['details']['thresholds']}")

    [(key, value)] = asyncio.run(_read_all(kafka_bootstrap, updates, want=1))
    update = decode(value)
    assert key.decode() == base.manifest.name
    assert (update.event, update.version) == ("promote", outcome["version"])
    loaded = Registry(registry).load(update.version, update.manifest_sha256)
    assert loaded.manifest.files["model.onnx"] == base.manifest.files["model.onnx"]
    assert Registry(registry).current().version == update.version  # type: ignore[union-attr]

    rollback = _cli("rollback", *common, "--reason", "integration test")
    assert rollback.returncode == 0, rollback.stderr
    messages = asyncio.run(_read_all(kafka_bootstrap, updates, want=2))
    assert len(messages) == 2
    back = decode(messages[1][1])
    assert (back.event, back.version) == ("rollback", base.version)
    Registry(registry).load(back.version, back.manifest_sha256)


def test_serve_runs_each_request_once(kafka_bootstrap: str, data: Path, tmp_path: Path) -> None:
    """Duplicates (a worker re-sending after a restart) and stale requests do not run a job.

    The tiny keyword bundle fails the gates on real data, so the job runs fast and publishes nothing."""
    from feedwarden.drift import RetrainRequest
    from tests.tiny_bundle import build_tiny_bundle

    tiny = build_tiny_bundle(tmp_path / "tiny")
    suffix = uuid.uuid4().hex[:8]
    requests, updates = f"retrain.requests.{suffix}", f"model.updates.{suffix}"
    asyncio.run(create_topics(kafka_bootstrap, [requests, updates]))
    request = RetrainRequest(("scam",), ((0.0, 60.0),), (), 60.0, tiny.version).to_dict()
    stale = request | {"model_version": "some-old-version"}
    payloads = [json.dumps(p).encode() for p in (request, request | {"requested_at": "later"}, stale)]
    asyncio.run(produce(kafka_bootstrap, requests, [(None, p) for p in payloads]))
    registry = tmp_path / "registry"
    command = [
        sys.executable,
        "-m",
        "feedwarden.cli",
        "retrain",
        "--serve",
        "--data",
        str(data),
        "--bundle",
        str(tiny.path),
        "--registry",
        str(registry),
        "--bootstrap",
        kafka_bootstrap,
        "--requests-topic",
        requests,
        "--updates-topic",
        updates,
        "--feedback-topic",
        f"fb.{suffix}",
        "--feedback-timeout",
        "5",
    ]
    ledger = registry / "retrain-requests.jsonl"
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as server:
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and server.poll() is None:
                if ledger.is_file() and len(ledger.read_text().splitlines()) >= 2:
                    break
                time.sleep(0.5)
            time.sleep(2.0)  # a duplicate, had it been run, would have reached the ledger by now
        finally:
            server.terminate()
            _, errors = server.communicate(timeout=20)
    lines = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.is_file() else []
    assert [line["outcome"] for line in lines] == ["gates_failed", "stale"], errors[-3000:]
    assert "already handled" in errors
    assert asyncio.run(_read_all(kafka_bootstrap, updates, want=0, timeout=3)) == []
