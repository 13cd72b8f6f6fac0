"""Only decided posts are committed: a guard on the Faust consumer's acks.

faust-streaming acks events it *skips*: a message its stream meets while the
flow is paused for a rebalance, or one fetched under an older consumer
generation, is dropped and acked (faust/streams.py) so that nothing waits
for it. The ack marks its offset safe to commit although nobody decided the
post; once a later offset of that partition is committed, the skipped posts
are never redelivered. On the embedded broker this lost 7 posts on each
partition a surviving worker kept across a rebalance (tests/faults/test_crash.py).

`AckGuard` lets through the acks of posts the agent marked as decided (their
records acknowledged by the broker) and withholds every other ack on the
posts topic from the offset bookkeeping. The message is still marked acked,
so Faust stops waiting for it; its partition is re-read from the committed
offset by its next owner (or by this worker, after Faust's seek back to the
committed offsets), so the post is decided later instead of never.

Written against faust-streaming 0.15.3 (pinned): it wraps `Consumer.ack` and
touches the consumer's `_unacked_messages` and `_waiting_for_ack`.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from mode.utils.futures import notify

log = logging.getLogger(__name__)


class AckGuard:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.decided: weakref.WeakSet[Any] = weakref.WeakSet()
        self.withheld = 0
        self._consumer: weakref.ReferenceType[Any] | None = None
        self._logged_generation: int | None = None

    def mark(self, message: Any) -> None:
        """`message` was decided and its records acknowledged: its offset may be committed."""
        self.decided.add(message)

    def install(self, consumer: Any) -> None:
        """Wrap `consumer.ack` (once per consumer object)."""
        if self._consumer is not None and self._consumer() is consumer:
            return
        original = consumer.ack

        def ack(message: Any) -> bool:
            if message.topic == self.topic and message not in self.decided:
                self._withhold(consumer, message)
                return False
            self.decided.discard(message)
            return bool(original(message))

        consumer.ack = ack
        self._consumer = weakref.ref(consumer)

    def _withhold(self, consumer: Any, message: Any) -> None:
        # What Consumer.ack does for a message, minus recording its offset as acked.
        message.acked = True
        consumer._unacked_messages.discard(message)
        notify(consumer._waiting_for_ack)
        self.withheld += 1
        generation = getattr(message, "generation_id", None)
        if generation != self._logged_generation:
            self._logged_generation = generation
            log.info("posts skipped by Faust around a rebalance (generation %s) are left uncommitted, "
                     "to be redelivered; %d so far", generation, self.withheld)
