"""Broker outage: the embedded broker is stopped for 15 s and restarted on the same port.

Tansu keeps everything in memory, so the restarted broker is empty: topics,
records and committed offsets are gone (an operator's Kafka keeps them; here
the test recreates the topics, as deploy's kafka-init would). What must hold
for the worker:

- it stays alive and does not crash-loop; /healthz keeps answering 200;
- /readyz answers 503 while the broker is gone (the consumer group
  membership Faust keeps in memory must not pass for readiness);
- it does not busy-spin: its CPU use stays low and its log does not flood;
- once the broker is back, it reconnects, rejoins its group and decides new
  posts, and /readyz is 200 again; SIGTERM still exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from feedwarden.models.bundle import Bundle
from feedwarden.stream import broker as broker_module
from feedwarden.stream.broker import EmbeddedBroker, start_broker
from feedwarden.stream.samples import numbered_posts
from feedwarden.stream.settings import Settings
from feedwarden.stream.worker import ensure_topics
from tests.faults.conftest import WorkerFactory
from tests.faults.support import cpu_seconds, fresh_topics, until
from tests.integration.helpers import Collector, produce, worker_env

pytestmark = [pytest.mark.faults, pytest.mark.integration]

OUTAGE_S = 15.0
READY_WITHIN_S = 10.0  # probe every 2 s, 5 s timeout
CPU_SHARE_MAX = 0.25  # of one core, averaged over the outage
LOG_LINES_MAX = 400  # over the whole outage


@pytest.fixture()
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test alone: stopping it must not disturb the session's broker."""
    with start_broker() as broker:
        yield broker


def relaunch(broker: EmbeddedBroker) -> None:
    """Start Tansu again on the same port (blocking)."""
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    fresh = broker_module._launch(broker_module.tansu_binary(broker.workdir), broker.workdir, port)
    broker.process = fresh.process
    assert broker_module._await_ready(broker, 30.0), "Tansu did not come back on its port"


def test_worker_rides_out_a_broker_outage(
    own_broker: EmbeddedBroker, tiny_bundle: Bundle, spawn: WorkerFactory
) -> None:
    asyncio.run(_outage(own_broker, tiny_bundle, spawn))


async def _decide(bootstrap: str, topic_posts: str, topic_decisions: str, prefix: str, n: int) -> None:
    posts = [orjson.dumps(p) for p in numbered_posts(n, prefix=prefix)]
    ids = {orjson.loads(p)["id"] for p in posts}
    async with Collector(bootstrap, (topic_decisions,)) as seen:
        await produce(bootstrap, topic_posts, [(None, p) for p in posts])
        decided = seen.records[topic_decisions]
        await until(lambda: {k.decode() for k, _ in decided} >= ids, 120, f"{prefix} posts decided",
                    lambda: f"{len(decided)}/{n}")


async def _outage(broker: EmbeddedBroker, bundle: Bundle, spawn: WorkerFactory) -> None:
    bootstrap = broker.bootstrap
    topics = await fresh_topics(bootstrap, 2, "outage")
    env = worker_env(bootstrap, topics, bundle.path, f"outage-{uuid.uuid4().hex[:6]}", 2)
    worker = spawn(env, "worker")
    await worker.wait_ready()
    await _decide(bootstrap, topics.posts, topics.decisions, "before-", 40)
    assert worker.get("/readyz")[0] == 200

    assert worker.process is not None
    pid = worker.process.pid
    log_before = len(worker.log_path.read_text(errors="replace").splitlines())
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    broker.process.terminate()
    broker.process.wait(10)
    ready, alive, not_ready_after = [], [], None
    while time.monotonic() - started < OUTAGE_S:
        await asyncio.sleep(1.0)
        status = (await asyncio.to_thread(worker.get, "/readyz"))[0]
        ready.append(status)
        alive.append((await asyncio.to_thread(worker.get, "/healthz"))[0])
        if status == 503 and not_ready_after is None:
            not_ready_after = time.monotonic() - started
        assert worker.alive(), f"worker died with the broker:\n{worker.log_tail()}"
    cpu_share = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
    outage_log = worker.log_path.read_text(errors="replace").splitlines()[log_before:]

    await asyncio.to_thread(relaunch, broker)
    back = time.monotonic()
    await ensure_topics(Settings.from_env(env))  # the memory-only broker came back empty
    await worker.wait_ready(90)
    ready_again = time.monotonic() - back
    await _decide(bootstrap, topics.posts, topics.decisions, "after-", 40)
    resumed = time.monotonic() - back
    stop_started = time.monotonic()
    code = worker.stop(signal.SIGTERM, 40)
    stopped = time.monotonic() - stop_started

    print(f"\nbroker down {OUTAGE_S:.0f}s: /readyz {ready} (first 503 after {not_ready_after:.1f}s), "
          f"/healthz {set(alive)}, worker CPU {cpu_share:.1%} of a core, {len(outage_log)} log lines; "
          f"back: ready after {ready_again:.1f}s, new posts decided after {resumed:.1f}s; "
          f"SIGTERM exit {code} in {stopped:.1f}s")
    assert set(alive) == {200}, "the worker stays alive (healthz) through the outage"
    assert not_ready_after is not None and not_ready_after <= READY_WITHIN_S, ready
    assert all(s == 503 for s in ready[int(READY_WITHIN_S):]), f"not ready for the whole outage: {ready}"
    assert cpu_share < CPU_SHARE_MAX, f"busy while the broker is down: {cpu_share:.0%} of a core"
    assert len(outage_log) < LOG_LINES_MAX, "\n".join(outage_log[-40:])
    assert "Traceback" not in "\n".join(outage_log), "\n".join(outage_log[-60:])
    assert code == 0 and stopped < 30, worker.log_tail()


def test_relaunch_reuses_the_port(own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The outage test's premise: a stopped embedded broker comes back on the same address."""
    before = own_broker.bootstrap
    own_broker.process.terminate()
    own_broker.process.wait(10)
    relaunch(own_broker)
    assert own_broker.bootstrap == before and own_broker.alive()


def test_sigterm_while_the_broker_is_down_still_exits_promptly(
    own_broker: EmbeddedBroker, tiny_bundle: Bundle, spawn: WorkerFactory
) -> None:
    asyncio.run(_stop_during_outage(own_broker, tiny_bundle, spawn))


async def _stop_during_outage(broker: EmbeddedBroker, bundle: Bundle, spawn: WorkerFactory) -> None:
    topics = await fresh_topics(broker.bootstrap, 2, "outstop")
    env = worker_env(broker.bootstrap, topics, bundle.path, f"outstop-{uuid.uuid4().hex[:6]}", 2)
    worker = spawn(env, "worker")
    await worker.wait_ready()
    await _decide(broker.bootstrap, topics.posts, topics.decisions, "pre-", 20)
    # Posts the worker has fetched but cannot answer for: their records cannot be sent.
    await produce(broker.bootstrap, topics.posts, [(None, orjson.dumps(p)) for p in numbered_posts(200)])
    broker.process.terminate()
    broker.process.wait(10)
    await asyncio.sleep(3)
    started = time.monotonic()
    code = await asyncio.to_thread(worker.stop, signal.SIGTERM, 60)
    took = time.monotonic() - started
    print(f"\nSIGTERM with the broker down: exit {code} in {took:.1f}s")
    assert code == 0 and took < 30, worker.log_tail()
