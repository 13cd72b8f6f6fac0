"""engine_paced_take on a Faust channel: no broker, the real Stream machinery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import faust
import pytest

from feedwarden.stream.batching import EngineSlot, engine_paced_take

# A broker URL is needed to build the app; channels never connect to it.
BROKER = "kafka://127.0.0.1:1"


class Harness:
    """A channel, a stream over it and engine_paced_take; batches are collected as value lists."""

    def __init__(self, max_: int, gather_s: float = 0.0) -> None:
        self.app = faust.App("batching-test", broker=BROKER, autodiscover=False)
        self.app.flow_control.resume()
        self.channel = self.app.channel()
        self.slot = EngineSlot()
        self.max_ = max_
        self.gather_s = gather_s
        self.batches: list[list[int]] = []
        self.arrived = asyncio.Event()

    async def __aenter__(self) -> Harness:
        stream = self.channel.stream()
        await stream.maybe_start()
        self._taker = engine_paced_take(stream, self.max_, self.slot, self.gather_s)
        self._task = asyncio.create_task(self._collect(self._taker))
        await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task

    async def _collect(self, batches: AsyncIterator[list[faust.types.EventT]]) -> None:
        async for events in batches:
            self.batches.append([event.value for event in events])
            self.arrived.set()

    async def send(self, *values: int) -> None:
        for value in values:
            await self.channel.send(value=value)

    async def next_batch(self) -> list[int]:
        await asyncio.wait_for(self.arrived.wait(), 2)
        self.arrived.clear()
        return self.batches[-1]


def test_an_idle_engine_takes_what_is_buffered_at_once() -> None:
    async def run() -> None:
        async with Harness(max_=100) as h:
            await h.send(1, 2, 3)
            assert await h.next_batch() == [1, 2, 3]
            assert h.slot.batches == 1  # the taker holds the engine for the batch it yielded

    asyncio.run(run())


def test_posts_gather_while_the_engine_is_busy_and_go_when_it_is_freed() -> None:
    async def run() -> None:
        async with Harness(max_=100) as h:
            await h.send(1)
            assert await h.next_batch() == [1]
            await h.send(2, 3)
            await asyncio.sleep(0.05)
            await h.send(4)
            await asyncio.sleep(0.05)
            assert h.batches == [[1]]  # busy: nothing taken, however long
            h.slot.release()
            assert await h.next_batch() == [2, 3, 4]

    asyncio.run(run())


def test_a_full_buffer_goes_even_while_the_engine_is_busy() -> None:
    async def run() -> None:
        async with Harness(max_=3) as h:
            await h.send(1)
            assert await h.next_batch() == [1]
            await h.send(2, 3, 4, 5)
            assert await h.next_batch() == [2, 3, 4]
            assert h.slot.batches == 2
            h.slot.release()
            h.slot.release()
            assert await h.next_batch() == [5]

    asyncio.run(run())


def test_gather_waits_for_the_rest_of_a_chunk() -> None:
    async def run() -> None:
        async with Harness(max_=100, gather_s=0.1) as h:
            await h.send(1)
            await asyncio.sleep(0.02)
            await h.send(2)
            assert await h.next_batch() == [1, 2]

    asyncio.run(run())


def test_the_slot_counts_batches_and_signals_the_last_release() -> None:
    slot = EngineSlot()
    slot.hold()
    slot.hold()
    slot.release()
    assert not slot.idle and not slot.wake.is_set()
    slot.release()
    assert slot.idle and slot.wake.is_set()
