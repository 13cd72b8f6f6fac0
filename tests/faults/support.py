"""Fault-test helpers: fresh topics, process figures from /proc, decisions without volatile fields."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from feedwarden.stream.broker import create_topics
from feedwarden.stream.settings import Topics

# The only fields of a decision allowed to differ between two deliveries of one post.
VOLATILE = ("decided_at", "latency_ms")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


async def fresh_topics(bootstrap: str, partitions: int, tag: str = "ft") -> Topics:
    """Unique topic names (created now), so tests never see each other's records."""
    run = f"{tag}-{uuid.uuid4().hex[:8]}"
    topics = Topics(*(f"{name}-{run}" for name in Topics().all()))
    await create_topics(bootstrap, topics.all(), default_partitions=partitions)
    return topics


def outputs(topics: Topics) -> tuple[str, ...]:
    return (topics.decisions, topics.hide, topics.warn, topics.badge, topics.dlq)


def rss_mib(pid: int) -> float:
    """Resident set size of `pid` now, in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def peak_rss_mib(pid: int) -> float:
    """High-water mark of the resident set of `pid`, in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (all its threads) so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def metric(text: str, name: str, labels: str = "") -> float:
    """A sample's value from Prometheus text exposition (0 if absent)."""
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)}\s+(\S+)$", re.MULTILINE)
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


def stable(value: bytes) -> dict[str, Any]:
    """A decision without the fields that legitimately change between deliveries."""
    record = orjson.loads(value)
    for name in VOLATILE:
        record.pop(name)
    return record


def duplicates(values: list[bytes]) -> tuple[int, dict[str, list[bytes]]]:
    """(extra deliveries, decisions by post id) over decision values."""
    by_id: dict[str, list[bytes]] = {}
    for value in values:
        by_id.setdefault(orjson.loads(value)["post_id"], []).append(value)
    return sum(len(v) - 1 for v in by_id.values()), by_id


def assert_idempotent(by_id: dict[str, list[bytes]]) -> int:
    """Each redelivered post got the same decision, bytes equal apart from VOLATILE; returns posts checked."""
    checked = 0
    for post_id, values in by_id.items():
        if len(values) < 2:
            continue
        first = values[0]
        for other in values[1:]:
            assert stable(other) == stable(first), f"post {post_id} decided differently on redelivery"
            # Byte-identical once the volatile fields are blanked: same key order, same float text.
            assert blank(other) == blank(first), post_id
        checked += 1
    return checked


_VOLATILE_BYTES = re.compile(rb'"(decided_at|latency_ms)":("[^"]*"|[0-9.eE+-]+)')


def blank(value: bytes) -> bytes:
    """The decision bytes with the volatile fields' values replaced by `_`."""
    return _VOLATILE_BYTES.sub(rb'"\1":_', value)


def tally(values: list[bytes], field: str) -> Counter[str]:
    return Counter(orjson.loads(v)[field] for v in values)


async def until(
    done: Callable[[], bool], timeout: float, what: str, status: Callable[[], str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            detail = f": {status()}" if status is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        await asyncio.sleep(0.2)
