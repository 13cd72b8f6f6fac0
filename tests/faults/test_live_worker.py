"""One live worker (released bundle) on the real broker, fed hostile traffic and bad model updates.

- Broker-level fuzz: a few hundred hostile payloads (every error code, deep
  nesting, invalid UTF-8, escaped lone surrogates, random bytes, a 200 kB
  payload, texts at the size limit, ids shaped like paths, repeated ids) are
  all accounted for: one decision per valid message, one dead letter per
  invalid one; the worker stays alive and its memory bounded.
- Privacy: every text carries a unique marker; it must not appear in the
  worker's log (INFO level) nor in /metrics. Dead letters keep at most
  DLQ_RAW_BYTES of the payload.
- Hot swap integrity: model.updates announcing a tampered version and one
  whose manifest disagrees with its graph are refused
  (feedwarden_bundle_rejected{reason}), and the released bundle keeps serving.
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from feedwarden.models.bundle import MANIFEST, Bundle, sha256_file
from feedwarden.models.updates import ModelUpdate
from feedwarden.stream import records as r
from feedwarden.stream.samples import malformed_payloads, numbered_posts
from feedwarden.stream.settings import Topics
from tests.faults.conftest import WorkerFactory
from tests.faults.support import fresh_topics, metric, outputs, peak_rss_mib, rss_mib, until
from tests.integration.helpers import Collector, Worker, produce, worker_env
from tests.unit.stream.loop_support import write_version

pytestmark = [pytest.mark.faults, pytest.mark.integration]

RSS_PEAK_MAX_MIB = 2048.0  # generous: the released int8 bundle serves in a few hundred MiB
RSS_GROWTH_MAX_MIB = 400.0  # over the hostile traffic, after warm-up


def hostile_payloads(marker: str, seed: int = 20261122) -> list[bytes]:
    """Deterministic hostile traffic; every payload that can carry the marker does."""
    rng = random.Random(seed)
    m = marker
    deep = 10_000
    out: list[bytes] = [value for _, value in malformed_payloads(64)]
    out += [
        b"[" * deep + b"]" * deep,
        b'{"a":' * deep + b"1" + b"}" * deep,
        b'{"id":"deep-1","text":"' + m.encode() + b'","context":' + b"[" * deep + b"]" * deep + b"}",
        b'{"id":"\\ud800","text":"' + m.encode() + b'"}',
        b'{"id":"sur-1","text":"' + m.encode() + b' \\udfff"}',
        b'{"id":"utf-1","text":"' + m.encode() + b' \xed\xa0\x80"}',
        b'{"id":"utf-2","text":"' + m.encode() + b' \xc0\xaf"}',
        b'{"id":"big-1","text":"' + m.encode() + b" " + b"x" * 200_000 + b'"}',  # text_too_long, 200 kB
        orjson.dumps({"id": "nan-1", "text": m, "created_at": "2026-13-45T99:99:99Z"}),
        b'{"id":"num-1","text":1e999}',
        b"\x00" * 64,
        m.encode(),
    ]
    out += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) for _ in range(60)]
    hostile_ids = ["../../etc/passwd", "/etc/shadow", "%s%n", "${jndi:ldap://x/a}", "a\x00b", "\u202eevil",
                   "__import__('os')", "x" * r.MAX_ID_CHARS, "dup", "dup", "dup"]
    texts = [f"{m}", f"{m} \x00\x01\x1b[31m", f"{m} " + "\U0001f4a9" * 500, f"{m} free crypto giveaway",
             f"{m} " + "ab " * 16_000, "\u0301" * 100 + m, f"{m}\r\n\u2028\u2029", f"{m} " + "é" * 49_000]
    for index in range(160):
        post_id = hostile_ids[index % len(hostile_ids)] if index % 3 == 0 else f"live-{index}"
        post: dict[str, Any] = {"id": post_id, "text": texts[index % len(texts)]}
        if index % 5 == 0:
            post |= {"author_id": m, "context": {"quoted": m, "depth": [[[m]]]}, "lang": "xx"}
        if index % 7 == 0:
            post |= {"lang": 7}  # wrong type: dead letter
        out.append(orjson.dumps(post))
    return out


def test_hostile_traffic_private_logs_and_refused_updates(
    kafka_bootstrap: str, released_bundle: Bundle, spawn: WorkerFactory, tmp_path: Path
) -> None:
    asyncio.run(_live(kafka_bootstrap, released_bundle, spawn, tmp_path))


def _registry(tmp: Path) -> tuple[Path, dict[str, bytes]]:
    """A registry holding a tampered version and a mislabelled one, and the updates announcing them."""
    root = tmp / "registry"
    tampered = write_version(root, "tampered-1")
    announced = {"tampered-1": sha256_file(tampered.path / MANIFEST)}
    with (tampered.path / "policy.json").open("a") as fh:
        fh.write(" ")  # after the manifest was written: its digest no longer matches
    mislabelled = write_version(root, "mislabelled-1", extra_label=True)
    announced["mislabelled-1"] = sha256_file(mislabelled.path / MANIFEST)
    updates = {v: ModelUpdate(v, digest, "promote", "faults test", "2026-11-22T02:00:00+00:00").encode()
               for v, digest in announced.items()}
    return root, updates


async def _live(bootstrap: str, bundle: Bundle, spawn: WorkerFactory, tmp: Path) -> None:
    marker = f"MRK{uuid.uuid4().hex}MRK"
    run = uuid.uuid4().hex[:8]
    topics = await fresh_topics(bootstrap, 2, "live")
    registry, updates = _registry(tmp)
    env = worker_env(bootstrap, topics, bundle.path, f"live-{run}", 2) | {
        "FEEDWARDEN_REGISTRY": str(registry),
        "FEEDWARDEN_TOPIC_MODEL_UPDATES": f"model.updates-{run}",
        "FEEDWARDEN_TOPIC_DRIFT_STATS": f"drift.stats-{run}",
        "FEEDWARDEN_TOPIC_DRIFT_ALERTS": f"drift.alerts-{run}",
        "FEEDWARDEN_TOPIC_RETRAIN_REQUESTS": f"retrain.requests-{run}",
        "FEEDWARDEN_TOPIC_SHADOW": f"decisions.shadow-{run}",
    }
    warmup = [orjson.dumps(p | {"text": f"{p['text']} {marker}"}) for p in numbered_posts(64, prefix="warm-")]
    hostile = hostile_payloads(marker)
    after = [orjson.dumps(p | {"text": f"{p['text']} {marker}"}) for p in numbered_posts(32, prefix="after-")]
    worker = spawn(env, "worker")
    await worker.wait_ready()
    serving = orjson.loads(worker.get("/readyz")[1])["bundle"]  # as loaded: the default may be re-released
    assert worker.process is not None
    pid = worker.process.pid

    async with Collector(bootstrap, outputs(topics)) as seen:
        await _fed(bootstrap, topics, seen, warmup, worker)
        rss_before = rss_mib(pid)
        positions = await _fed(bootstrap, topics, seen, hostile, worker)
        rss_after, rss_peak = rss_mib(pid), peak_rss_mib(pid)

        await produce(bootstrap, f"model.updates-{run}", [(b"tiny-keywords", u) for u in updates.values()])
        await until(lambda: min(_rejected(worker).values()) >= 1, 60, "both updates refused",
                    lambda: str(_rejected(worker)))
        await _fed(bootstrap, topics, seen, after, worker)
        after_models = {tuple(orjson.loads(v)["model"].values()) for k, v in seen.records[topics.decisions]
                        if k.decode().startswith("after-")}
        _, metrics_text = worker.get("/metrics")
        dead = [orjson.loads(v) for _, v in seen.records[topics.dlq]]
        assert worker.alive(), worker.log_tail()
    code = worker.stop(signal.SIGTERM)
    log = worker.log_path.read_text(errors="replace")

    valid = [p for p in hostile if isinstance(r.decode_post(p), r.Post)]
    by_position = {(d["partition"], d["offset"]): d for d in dead}
    hostile_dead = [by_position[pos] for pos, p in zip(positions, hostile, strict=True) if p not in valid]
    assert len(hostile_dead) == len(hostile) - len(valid), "one dead letter per invalid payload"
    for letter in dead:
        assert letter["error"] in r.ERROR_CODES
        assert len(letter["raw"]) <= r.DLQ_RAW_BYTES, "dead letters keep a bounded prefix"
    assert max(d["raw_bytes"] for d in dead) > 200_000 and max(len(d["raw"]) for d in dead) <= r.DLQ_RAW_BYTES
    assert after_models == {(serving, serving)}, "the released bundle kept serving"
    assert metric(metrics_text, "feedwarden_bundle_swaps_total") == 0
    assert f'version="{serving}"' in metrics_text
    assert marker not in metrics_text, "post text leaked into /metrics"
    assert "live-" not in metrics_text and "warm-" not in metrics_text, "post ids leaked into /metrics"
    leaked = [line for line in log.splitlines() if marker in line]
    assert not leaked, f"post text leaked into the log: {leaked[:3]}"
    assert "REJECTED" in log and "tampered-1" in log and "mislabelled-1" in log
    assert "Traceback" not in log, log[-4000:]
    assert code == 0, log[-4000:]
    print(f"\nlive worker: {len(hostile)} hostile payloads ({len(valid)} valid, {len(hostile) - len(valid)} "
          f"dead-lettered), all accounted for; RSS {rss_before:.0f} -> {rss_after:.0f} MiB, peak "
          f"{rss_peak:.0f} MiB; updates refused {_rejected_text(metrics_text)}; marker in log/metrics: 0/0; "
          f"{len(log.splitlines())} log lines; SIGTERM exit {code}")
    assert rss_peak < RSS_PEAK_MAX_MIB and rss_after - rss_before < RSS_GROWTH_MAX_MIB


async def _fed(bootstrap: str, topics: Topics, seen: Collector, payloads: list[bytes],
               worker: Worker) -> list[tuple[int, int]]:
    """Produce `payloads` and wait until each one has its decision or dead letter; returns positions."""
    positions = await produce(bootstrap, topics.posts, [(None, p) for p in payloads])
    wanted = set(positions)
    valid = [isinstance(r.decode_post(p), r.Post) for p in payloads]
    valid_at = {pos for pos, ok in zip(positions, valid, strict=True) if ok}
    ids = {orjson.loads(p)["id"] for p, ok in zip(payloads, valid, strict=True) if ok}

    def done() -> bool:
        dead = {(d["partition"], d["offset"]) for d in (orjson.loads(v) for _, v in seen.records[topics.dlq])}
        decided = {k.decode("utf-8", "surrogateescape") for k, _ in seen.records[topics.decisions]}
        return wanted - valid_at <= dead and ids <= decided

    await until(done, 180, f"{len(payloads)} payloads accounted for",
                lambda: f"worker alive: {worker.alive()}")
    return positions


def _rejected(worker: Worker) -> dict[str, float]:
    text = worker.get("/metrics")[1]
    return {reason: metric(text, "feedwarden_bundle_rejected_total", f'{{reason="{reason}"}}')
            for reason in ("digest", "labels")}


def _rejected_text(metrics_text: str) -> dict[str, float]:
    return {reason: metric(metrics_text, "feedwarden_bundle_rejected_total", f'{{reason="{reason}"}}')
            for reason in ("digest", "labels")}
