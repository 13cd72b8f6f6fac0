"""At-least-once on a real broker through two SIGKILLs: 3000 posts, malformed payloads mixed in.

Two workers share one consumer group over a 3-partition topic. Mid-stream
one is SIGKILLed (no graceful commit); the survivor must take over every
partition, including the victim's uncommitted work, before the victim is
restarted. Later the other one is killed and restarted the same way. In the
end every post has a decision (keyed by its id), every bad payload one dead
letter with its error code, and every post decided more than once got
byte-identical decisions apart from `decided_at` and `latency_ms`.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from feedwarden.models.bundle import Bundle
from feedwarden.stream.samples import malformed_payloads, numbered_posts
from feedwarden.stream.settings import Topics
from tests.faults.conftest import WorkerFactory
from tests.faults.support import assert_idempotent, duplicates, fresh_topics, metric, outputs, until
from tests.integration.helpers import Collector, Worker, interleave, produce, worker_env

pytestmark = [pytest.mark.faults, pytest.mark.integration]

PARTITIONS = 3
VALID = 3000
MALFORMED = 64  # every decodable error code, four times over
CHUNK = 100
LEAD = 400  # the feed stays at most this far ahead of the outputs: the kills land mid-stream
TAKEOVER = 150  # decisions the survivor must make alone, on every partition, before the restart


def test_two_sigkills_lose_nothing_and_redeliveries_decide_identically(
    kafka_bootstrap: str, released_bundle: Bundle, spawn: WorkerFactory
) -> None:
    asyncio.run(_crash_twice(kafka_bootstrap, released_bundle, spawn))


class Feed:
    """Produces the stream in chunks, paced by the outputs seen, recording where each message landed."""

    def __init__(self, bootstrap: str, topic: str, stream: list[tuple[bytes | None, bytes]]) -> None:
        self.bootstrap, self.topic, self.stream = bootstrap, topic, stream
        self.positions: list[tuple[int, int]] = []
        self.partition_of: dict[str, int] = {}
        # The last fifth waits for `release`: however fast the workers, the kills land mid-stream.
        self.hold_from = len(stream) * 4 // 5
        self.release = asyncio.Event()

    async def run(self, progress: Callable[[], int]) -> None:
        for start in range(0, len(self.stream), CHUNK):
            if start >= self.hold_from:
                await self.release.wait()
            while progress() < start - LEAD:
                await asyncio.sleep(0.05)
            chunk = self.stream[start : start + CHUNK]
            landed = await produce(self.bootstrap, self.topic, chunk)
            self.positions += landed
            for (key, _), (partition, _) in zip(chunk, landed, strict=True):
                if key is not None:
                    self.partition_of[key.decode()] = partition


async def _crash_twice(bootstrap: str, bundle: Bundle, spawn: WorkerFactory) -> None:
    topics = await fresh_topics(bootstrap, PARTITIONS, "crash")
    posts = [orjson.dumps(p) for p in numbered_posts(VALID, prefix="crash-")]
    ids = {orjson.loads(p)["id"] for p in posts}
    bad = malformed_payloads(MALFORMED)
    stream = interleave(posts, bad)
    feed = Feed(bootstrap, topics.posts, stream)
    env = worker_env(bootstrap, topics, bundle.path, f"crash-{uuid.uuid4().hex[:6]}", PARTITIONS)
    started = time.monotonic()

    async with Collector(bootstrap, outputs(topics)) as seen:
        decisions, letters = seen.records[topics.decisions], seen.records[topics.dlq]

        def decided() -> set[str]:
            return {key.decode() for key, _ in decisions}

        def status() -> str:
            missing = ids - decided()
            where: dict[int, list[int]] = {}
            for index, (key, _) in enumerate(stream[: len(feed.positions)]):
                if key is not None and key.decode() in missing:
                    partition, offset = feed.positions[index]
                    where.setdefault(partition, []).append(offset)
            spans = {p: (min(o), max(o), len(o)) for p, o in sorted(where.items())}
            return (f"{len(decided())}/{VALID} posts decided, {len(letters)}/{MALFORMED} dead letters; "
                    f"undecided (partition: first, last offset, count) {spans}")

        workers = {"a": spawn(env, "a"), "b": spawn(env, "b")}
        for worker in workers.values():
            await worker.wait_ready()
        feeding = asyncio.create_task(feed.run(lambda: len(decisions) + len(letters)))
        await until(lambda: len(decided()) >= VALID // 5, 240, "a fifth decided", status)
        shares = {name: metric(w.get("/metrics")[1], "feedwarden_posts_total") for name, w in workers.items()}
        assert all(shares.values()), f"both workers should consume their share of partitions: {shares}"

        kills = []
        for victim, survivor, mark in (("a", "b", VALID // 5), ("b", "a", VALID * 3 // 5)):
            await until(lambda m=mark: len(decided()) >= m, 240, f"{mark} decisions", status)  # type: ignore[misc]
            killed_at = await _kill_and_take_over(workers, victim, survivor, feed, feeding, decisions, status)
            kills.append(killed_at)
            workers[victim] = spawn(env, f"{victim}-restarted")
            await workers[victim].wait_ready()

        await feeding
        try:
            await until(lambda: decided() >= ids, 240, "a decision for every post", status)
        except AssertionError as exc:
            committed = await _committed(bootstrap, env["FEEDWARDEN_GROUP_ID"])
            raise AssertionError(f"{exc}; committed offsets {committed}") from None
        await until(
            lambda: len({_where(v) for _, v in letters}) >= MALFORMED, 60, "every dead letter", status
        )
        elapsed = time.monotonic() - started
        for worker in workers.values():
            assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
        copies = {t: [v for _, v in seen.records[t]] for t in (topics.hide, topics.warn, topics.badge)}

    for key, value in decisions:
        assert orjson.loads(value)["post_id"] == key.decode(), "decisions are keyed by post id"
    extra, by_id = duplicates([v for _, v in decisions])
    assert set(by_id) == ids, "a decision for every valid post and for nothing else"
    assert len(decisions) == len(by_id) + extra
    redecided = assert_idempotent(by_id)
    _check_action_copies(topics, by_id, copies)
    dead = _check_dead_letters(topics, stream, bad, feed.positions, [v for _, v in letters])

    print(
        f"\n{VALID} posts + {MALFORMED} malformed, 2 workers, 2 SIGKILLs mid-stream "
        f"(at {kills[0]} and {kills[1]} outputs), {elapsed:.0f}s: {len(by_id)}/{VALID} decided, "
        f"{len(dead)}/{MALFORMED} dead-lettered ({sum(dead.values())} DLQ records), "
        f"{extra} duplicate decisions over {redecided} posts (all identical bar decided_at/latency_ms); "
        f"consumed before the first kill: {shares}"
    )
    # Each kill redelivers at most what was consumed since the victim's last commit:
    # a bounded window, far below the stream (Faust commits every few seconds).
    assert extra < VALID // 3, f"{extra} duplicates"


async def _kill_and_take_over(
    workers: dict[str, Worker],
    victim: str,
    survivor: str,
    feed: Feed,
    feeding: asyncio.Task[None],
    decisions: list[tuple[bytes, bytes]],
    status: Callable[[], str],
) -> int:
    """SIGKILL `victim`; the survivor alone must then decide posts of every partition."""
    assert workers[victim].stop(signal.SIGKILL) == -signal.SIGKILL
    assert not feeding.done(), "each kill should land mid-stream"
    if victim == "b":
        feed.release.set()  # the last kill has landed; the survivor needs posts to show its takeover
    at = len(decisions)
    partitions = set(range(PARTITIONS))

    def taken_over() -> bool:
        later = {feed.partition_of.get(key.decode()) for key, _ in decisions[at:]}
        return len(decisions) - at >= TAKEOVER and partitions <= later

    await until(taken_over, 120, f"{survivor} taking over {victim}'s partitions", status)
    assert workers[survivor].alive(), workers[survivor].log_tail()
    return at


async def _committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: m.offset for tp, m in sorted(offsets.items()) if tp.topic.startswith("posts-")}


def _where(dead_letter: bytes) -> tuple[int, int]:
    record = orjson.loads(dead_letter)
    return record["partition"], record["offset"]


def _check_action_copies(
    topics: Topics, by_id: dict[str, list[bytes]], copies: dict[str, list[bytes]]
) -> None:
    final = {post_id: orjson.loads(values[0])["action"] for post_id, values in by_id.items()}
    for action, topic in (("hide", topics.hide), ("warn", topics.warn), ("badge", topics.badge)):
        got = {orjson.loads(v)["post_id"] for v in copies[topic]}
        assert got == {p for p, a in final.items() if a == action}, action


def _check_dead_letters(
    topics: Topics,
    stream: list[tuple[bytes | None, bytes]],
    bad: list[tuple[str, bytes]],
    positions: list[tuple[int, int]],
    values: list[bytes],
) -> Counter[tuple[int, int]]:
    """One dead letter (maybe redelivered) per malformed payload, with its code; counts per position."""
    records = [orjson.loads(v) for v in values]
    per_position = Counter((r["partition"], r["offset"]) for r in records)
    unkeyed = [index for index, (key, _) in enumerate(stream) if key is None]
    expected = {positions[index]: code for index, (code, _) in zip(unkeyed, bad, strict=True)}
    assert set(per_position) == set(expected), "one dead letter per malformed payload and nothing else"
    for record in records:
        where = (record["partition"], record["offset"])
        assert record["error"] == expected[where] and record["topic"] == topics.posts
    return per_position
