"""The ack guard: Faust's acks of skipped posts never reach the offsets it commits."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from feedwarden.models.bundle import Bundle
from feedwarden.stream.acks import AckGuard
from feedwarden.stream.app import create_app
from feedwarden.stream.settings import Settings


def _message(topic: str, offset: int) -> ConsumerMessage:
    return ConsumerMessage(topic, 0, offset, 0.0, 0, [], b"k", b"v", None, generation_id=1)


def test_only_decided_posts_are_recorded_for_commit(tiny_bundle: Bundle) -> None:
    async def scenario() -> None:
        app = create_app(Settings(bundle=tiny_bundle.path, providers="cpu", web_port=16096))
        app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
        consumer: Any = app.consumer  # private bookkeeping is what this test checks
        guard = AckGuard("posts")
        guard.install(consumer)
        guard.install(consumer)  # idempotent
        decided = [_message("posts", offset) for offset in (10, 11)]
        skipped = [_message("posts", offset) for offset in (12, 13)]
        other = _message("drift.stats", 5)
        for message in decided + skipped + [other]:
            consumer.track_message(message)
        for message in decided:
            guard.mark(message)
            message.ack(consumer)
        for message in skipped:  # what Faust's stream does with a message it skips
            message.ack(consumer)
        other.ack(consumer)
        assert consumer._acked[TP("posts", 0)] == [10, 11], "skipped posts are not committable"
        assert consumer._acked[TP("drift.stats", 0)] == [5], "other topics are left alone"
        assert all(m.acked for m in decided + skipped), "Faust stops waiting for every one of them"
        assert not consumer._unacked_messages
        assert guard.withheld == 2

    asyncio.run(scenario())



def test_a_commit_over_an_unacked_head_offset_is_named_in_a_warning(
    tiny_bundle: Bundle, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        app = create_app(Settings(bundle=tiny_bundle.path, providers="cpu", web_port=16097))
        app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
        consumer: Any = app.consumer
        tp = TP("posts", 0)
        consumer._committed_offset[tp] = 10  # the next offset to read
        guard = AckGuard("posts")
        guard.install(consumer)
        head, *rest = [_message("posts", offset) for offset in (10, 11, 12)]
        for message in (head, *rest):
            consumer.track_message(message)
        head.ack(consumer)  # skipped by Faust: withheld
        for message in rest:
            guard.mark(message)
            message.ack(consumer)
        # Faust tolerates a hole of exactly one offset at the head and commits over it.
        assert consumer._new_offset(tp) == 13

    with caplog.at_level(logging.WARNING, logger="feedwarden.stream.acks"):
        asyncio.run(scenario())
    assert "Faust commits past offset 10 of" in caplog.text
    assert "1 posts withheld" in caplog.text


def test_the_flow_is_held_from_rebalance_complete_until_faust_resumes_it(tiny_bundle: Bundle) -> None:
    async def scenario() -> None:
        app = create_app(Settings(bundle=tiny_bundle.path, providers="cpu", web_port=16098))
        app.flow_control.resume()
        await app.on_rebalance_complete.send()  # create_app wired hold_flow_until_seek
        assert not app.flow_control.is_active()
        delivery = asyncio.ensure_future(app.flow_control.acquire())  # what the conductor awaits per message
        await asyncio.sleep(0.01)
        assert not delivery.done()
        app.flow_control.resume()  # Faust's recovery, after the seek (and the queue clear)
        await asyncio.wait_for(delivery, 1)

    asyncio.run(scenario())
