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

Faust's `_new_offset` also commits the first run of acked offsets when it
starts exactly one past the committed offset (it refuses only holes of two or
more). A post lost that way would be silent, so the guard logs a warning
naming the offset whenever Faust is about to do it. Refusing such commits
outright was tried and reverted: in one run in ~30 the hole was a post this
worker had decided whose offset Faust's bookkeeping had dropped, and the
refusal (with a seek back to re-read it) stalled the partition's commits.

`hold_flow_until_seek` closes the hole that warning kept finding after a
restart. When table recovery ends, Faust resumes the stream partitions while
the flow is still running (it was resumed to read the changelog), then seeks
them to their committed offsets, then resumes the flow, and
`FlowControlEvent.resume` empties every stream queue. Posts fetched during the
seek (a broker round trip) sat in those queues and were dropped, and the fetch
loop, still walking its pre-seek batch, moved the read offset past them, so
the refetch after the seek skipped them too: traced in a restarted worker,
posts 1:235 and 1:237 decided, 1:236 dropped by the clear, then committed
over. Holding the flow from `on_rebalance_complete` (sent just before that
resume) keeps fetched posts out of the queues until after the clear.

Written against faust-streaming 0.15.3 (pinned): it wraps `Consumer.ack` and
`Consumer._new_offset`, reads or touches the consumer's `_acked`, `_gap`,
`_committed_offset`, `_unacked_messages` and `_waiting_for_ack`, and relies on
`on_rebalance_complete` being sent before the recovery's seek and resume
(faust/tables/recovery.py: `on_recovery_completed`, `_resume_streams`).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from mode.utils.futures import notify

log = logging.getLogger(__name__)


def hold_flow_until_seek(app: Any) -> None:
    """Suspend the app's flow when a rebalance completes; Faust resumes it after the seek."""

    async def hold(sender: Any, *args: Any, **kwargs: Any) -> None:
        # The conductor waits on this event before queueing a fetched message, so nothing
        # reaches a stream queue until `flow_control.resume()` has cleared them. Faust's
        # recovery resumes it right after the seek; if the generation moved on instead,
        # the next rebalance suspends and resumes it again.
        app.flow_control.suspend()

    app.on_rebalance_complete.connect(hold)


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

        original_new_offset = consumer._new_offset

        def new_offset(tp: Any) -> int | None:
            if tp.topic == self.topic:
                self._warn_of_hole_at_head(consumer, tp)
            return original_new_offset(tp)

        consumer.ack = ack
        consumer._new_offset = new_offset
        self._consumer = weakref.ref(consumer)

    def _warn_of_hole_at_head(self, consumer: Any, tp: Any) -> None:
        acked = consumer._acked[tp]
        committed = consumer._committed_offset[tp]
        if not acked or committed is None or consumer._gap[tp].at(committed):
            return
        if min(acked) == committed + 1:
            log.warning(
                "Faust commits past offset %d of %s, which was never acked as decided (%d posts withheld "
                "so far): if it was not decided before, it is lost", committed, tp, self.withheld,
            )

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
