"""The Faust app: the moderate agent, its output topics and the web endpoints.

The agent only does I/O. Each micro-batch is decided by the pure
`Moderator` in an executor thread (onnxruntime and tokenizers release the
GIL), its records are produced, and only when the broker has acknowledged
every one of them are the batch's events acked, so Faust can commit their
offsets: at-least-once, duplicates possible after a crash, nothing lost.

Batches are cut by `engine_paced_take` (stream/batching.py): when the engine
is free, not on a fixed tick. Like Faust's `noack_take` (and unlike `take()`,
which acks the buffered events in a `finally` when the generator is resumed
*or closed*, so a batch interrupted by a shutdown or an error would have its
offsets committed without its decisions) it never acks; we do, after the sends.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka.errors import KafkaError
from faust.streams import Stream
from faust.types import EventT, StreamT
from faust.types.auth import CredentialsT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feedwarden.models.engine import ENGINE_THREAD_NAME, name_os_thread
from feedwarden.stream.acks import AckGuard, hold_flow_until_seek
from feedwarden.stream.batching import EngineSlot, engine_paced_take
from feedwarden.stream.health import BrokerProbe, damp_reconnect_noise, exit_after
from feedwarden.stream.loop import wire_model_loop
from feedwarden.stream.metrics import Metrics
from feedwarden.stream.settings import Settings
from feedwarden.stream.topology import BatchReport, Incoming, Moderator, Outgoing, Scorer
from feedwarden.stream.transport import SCHEME

log = logging.getLogger(__name__)

# Called after each batch's records are acknowledged, before its offsets are
# released, with the batch's messages, its report and the moderator that
# decided it: the hook for per-label drift statistics and shadow scoring
# (stream/loop.py). It runs inside the agent, so it must not write Faust
# tables (they fail inside take()); forward to a keyed topic instead.
BatchHook = Callable[[Sequence[Incoming], BatchReport, Moderator], Awaitable[None]]
# Publishes one record; the awaitable it returns resolves when the broker acks it.
Sender = Callable[[Outgoing], Awaitable[Awaitable[Any]]]

RECENT_IDS = 100_000
SEND_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
DRAIN_SECONDS = 10.0  # a clean stop waits this long for the batches in hand
RETRIABLE = (KafkaError, OSError, asyncio.TimeoutError)


@dataclass
class Batch:
    """One micro-batch in the agent's pipeline."""

    events: Sequence[EventT]
    enqueued: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Future[None] | None = None


class RecentIds:
    """A bounded memory of post ids, to count redeliveries."""

    def __init__(self, capacity: int = RECENT_IDS) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen_before(self, post_id: str) -> bool:
        if post_id in self._ids:
            self._ids.move_to_end(post_id)
            return True
        self._ids[post_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False


class ModerationService:
    """Everything the agent needs: the loaded bundle, metrics and readiness."""

    def __init__(self, settings: Settings, metrics: Metrics, on_batch: BatchHook | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.on_batch = on_batch
        scorer = Scorer.from_bundle(
            settings.bundle, threads=settings.threads, providers=settings.providers,
        )
        self.moderator = Moderator(scorer, settings.topics, max_text_chars=settings.max_text_chars)
        bundle = scorer.engine.bundle
        metrics.model_info.info(
            {"bundle": bundle.manifest.name, "version": bundle.version,
             "policy_version": scorer.policy.version, "provider": scorer.engine.provider}
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedwarden-infer",
                                           initializer=name_os_thread, initargs=(ENGINE_THREAD_NAME,))
        self.recent = RecentIds()
        self.joined_group = False
        self.broker_reachable = True  # kept current by the broker probe task (stream/health.py)

    async def handle(
        self, events: Sequence[EventT], send: Sender, *, turn: Batch | None = None, own: Batch | None = None,
        slot: EngineSlot | None = None,
    ) -> BatchReport:
        """Decide a batch and produce its records; returns once the broker has them all.

        Pipelined (see `_wire_agent`): `turn` is the previous batch, whose records
        must be enqueued before ours so partitions keep batch order; `own.enqueued`
        is set once ours are. `slot`, held for this batch, is released once it is decided.
        """
        try:
            messages = [_incoming(event) for event in events]
            loop = asyncio.get_running_loop()
            moderator = self.moderator  # read once: a hot swap never splits a batch between two bundles
            report = await loop.run_in_executor(self.executor, moderator.moderate_batch, messages)
        finally:
            if slot is not None:
                slot.release()
        if turn is not None:
            await turn.enqueued.wait()
        started = time.perf_counter()
        await _produce_all(report.outgoing, send, enqueued=None if own is None else own.enqueued)
        report.stage_seconds["produce"] += time.perf_counter() - started
        self._observe(report, len(events))
        if self.on_batch is not None:
            await self.on_batch(messages, report, moderator)
        return report

    def _observe(self, report: BatchReport, consumed: int) -> None:
        m = self.metrics
        now = time.time()
        m.posts.inc(consumed)
        m.batch_size.observe(consumed)
        for stage, seconds in report.stage_seconds.items():
            m.stage_seconds.labels(stage).observe(seconds)
        m.inference_seconds.observe(report.stage_seconds.get("infer", 0.0))
        for error in report.dead_letters:
            m.dead_letters.labels(error).inc()
        actions = Counter(decided.decision.action for decided in report.decided)
        hits = Counter((hit.label, hit.action) for d in report.decided for hit in d.decision.labels)
        for action, count in actions.items():
            m.decisions.labels(action).inc(count)
        for (label, action), count in hits.items():
            m.label_hits.labels(label, action).inc(count)
        for decided in report.decided:
            if decided.timestamp is not None:
                m.end_to_end_seconds.observe(max(0.0, now - decided.timestamp))
            if self.recent.seen_before(decided.post_id):
                m.duplicates.inc()

    def ready(self, app: faust.App) -> bool:
        ready = self.joined_group and not app.rebalancing and self.broker_reachable
        self.metrics.ready.set(1 if ready else 0)
        return ready


def _incoming(event: EventT) -> Incoming:
    message = event.message
    return Incoming(
        value=cast(bytes | None, message.value),
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=message.timestamp,
    )


async def _produce_all(
    records: Sequence[Outgoing], send: Sender, enqueued: asyncio.Event | None = None
) -> None:
    """Send every record and wait for the broker's acks, re-sending failures until all land.

    Records are enqueued one by one, in order, so a partition receives them in
    batch order; only the acks are awaited together. A re-send can duplicate a
    record whose ack was lost; at-least-once allows that. Anything but a Kafka
    or network error is a bug and propagates.
    """
    pending = list(records)
    for attempt in itertools.count():
        acks = [await _enqueue(send, r) for r in pending]
        if enqueued is not None:
            enqueued.set()  # the next batch may enqueue behind ours (a re-send may not keep that order)
        results = await asyncio.gather(*acks, return_exceptions=True)
        errors = [res for res in results if isinstance(res, BaseException)]
        if not errors:
            return
        for error in errors:
            if not isinstance(error, RETRIABLE):
                raise error
        pending = [r for r, res in zip(pending, results, strict=True) if isinstance(res, BaseException)]
        delay = SEND_RETRY_SECONDS[min(attempt, len(SEND_RETRY_SECONDS) - 1)]
        log.warning("%d records not acknowledged (%s); re-sending in %.1fs",
                    len(pending), ", ".join(sorted({type(e).__name__ for e in errors})), delay)
        await asyncio.sleep(delay)


async def _enqueue(send: Sender, record: Outgoing) -> Awaitable[Any]:
    """The record's ack; a failure to even enqueue becomes an already-failed ack."""
    try:
        return await send(record)
    except RETRIABLE as exc:
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed


def create_app(
    settings: Settings, *, metrics: Metrics | None = None, on_batch: BatchHook | None = None
) -> faust.App:
    """A Faust app wired to `settings`; the bundle is loaded now, so a bad one fails fast."""
    metrics = metrics or Metrics()
    service = ModerationService(settings, metrics, on_batch)
    app = faust.App(
        settings.group_id,
        broker=[f"{SCHEME}://{server.strip()}" for server in settings.bootstrap.split(",")],
        broker_credentials=_credentials(settings),
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        datadir=_scratch_dir(),  # Faust insists on one; the drift table lives in memory (changelog-backed)
        consumer_auto_offset_reset="earliest",  # also the only reliable choice on Tansu
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 10),
        broker_commit_interval=settings.commit_interval_s,  # Faust's default 2.8 s
        producer_linger=settings.producer_linger_ms / 1000.0,  # Faust's default 0
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host="127.0.0.1" if settings.web_bind in ("0.0.0.0", "127.0.0.1") else settings.web_bind,
    )
    app.moderation = service  # type: ignore[attr-defined]  # for tests and the CLI
    _wire_agent(app, service)
    _wire_readiness(app, service)
    _wire_web(app, service)
    _wire_broker_probe(app, service)
    wire_model_loop(app, service)
    return app


SCRATCH_PREFIX = "feedwarden-faust-"


def _scratch_dir(parent: str | None = None) -> str:
    """Faust's data dir (empty: the drift table lives in memory), named after our pid.

    atexit removes it on a clean exit; a worker that was SIGKILLed or forced
    out by the stop deadline cannot, so each start also sweeps the dirs of
    workers that no longer run."""
    parent = parent or tempfile.gettempdir()
    for stale in Path(parent).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = stale.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    path = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _credentials(settings: Settings) -> CredentialsT | None:
    security = settings.security
    if security.protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=security.username, password=security.password,
            mechanism=security.sasl_mechanism, ssl_context=security.ssl_context(),
        )
    context = security.ssl_context()
    return faust.SSLCredentials(context) if context is not None else None


def _wire_agent(app: faust.App, service: ModerationService) -> None:
    settings = service.settings
    topics = settings.topics
    posts = app.topic(topics.posts, key_type=bytes, value_type=bytes, partitions=settings.partitions)

    async def send(record: Outgoing) -> Awaitable[Any]:
        # Straight to the app's producer (started by the agent): publish now, not when the
        # source event is acked (Faust "attachments"), so we can wait for the broker before
        # acking; Faust's Topic.send layers cost 13% of the event loop for nothing we use.
        return await app.producer.send(record.topic, record.key, record.value, None, None, None)

    guard = AckGuard(topics.posts)  # only decided posts reach the offset bookkeeping (stream/acks.py)
    hold_flow_until_seek(app)  # and no fetched post is dropped by the recovery's queue clear

    async def decide_and_ack(stream: StreamT, batch: Batch, previous: Batch | None, slot: EngineSlot) -> None:
        await service.handle(batch.events, send, turn=previous, own=batch, slot=slot)
        if previous is not None and previous.done is not None:
            await previous.done  # acks in batch order; a failed predecessor fails us before any ack
        for event in batch.events:
            guard.mark(event.message)
            await stream.ack(event)

    @app.agent(posts, name="moderate", concurrency=1)
    async def moderate(stream: StreamT) -> None:
        # A pipeline of `pipeline_depth` batches: while one batch's records wait for
        # the broker's acks (and its drift hook runs), the next is taken and
        # decided on the inference thread, so the CPU never idles on the broker.
        guard.install(app.consumer)
        await app.maybe_start_producer()  # once per run of the agent, not per record
        slot = EngineSlot()  # one per run of the agent: a restarted agent starts with a free engine
        batches = engine_paced_take(cast(Stream, stream), settings.batch_size, slot, settings.batch_wait_s)
        inflight: deque[Batch] = deque()
        try:
            async for events in batches:
                batch = Batch(cast(Sequence[EventT], events))
                batch.done = asyncio.ensure_future(
                    decide_and_ack(stream, batch, inflight[-1] if inflight else None, slot))
                inflight.append(batch)
                while len(inflight) >= settings.pipeline_depth:
                    oldest = inflight[0].done
                    assert oldest is not None
                    await asyncio.shield(oldest)  # a failed batch stops the agent, as before
                    inflight.popleft()
        except asyncio.CancelledError:
            await _drained(inflight)
            raise


async def _drained(inflight: Sequence[Batch]) -> None:
    """A clean stop (we were cancelled): let the batches in hand finish first, in order.

    They then get their records out and their events acked before the
    consumer's final commit, so a clean stop repeats nothing. A stop that takes
    longer than DRAIN_SECONDS leaves them unacked: redelivered later.
    """
    pending = [batch.done for batch in inflight if batch.done is not None]
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.gather(*pending), DRAIN_SECONDS)


def _wire_readiness(app: faust.App, service: ModerationService) -> None:
    async def joined(sender: Any, *args: Any, **kwargs: Any) -> None:
        service.joined_group = True
        service.ready(app)

    async def not_ready(sender: Any, *args: Any, **kwargs: Any) -> None:
        service.metrics.ready.set(0)

    async def rebalanced(sender: Any, *args: Any, **kwargs: Any) -> None:
        service.ready(app)

    async def stop_deadline(sender: Any, *args: Any, **kwargs: Any) -> None:
        exit_after()  # a stop that hangs (broker gone) must not outlive the grace period

    _connect(app.on_partitions_assigned, joined)
    _connect(app.on_partitions_revoked, not_ready)
    _connect(app.on_rebalance_complete, rebalanced)
    _connect(app.on_before_shutdown, not_ready)
    _connect(app.on_before_shutdown, stop_deadline)


def _connect(signal: Any, handler: Callable[..., Awaitable[None]]) -> None:
    # Typed as Any: mode's handler type spells `signal` as a string forward
    # reference that mypy never matches against a plain coroutine function.
    signal.connect(handler)


def _wire_broker_probe(app: faust.App, service: ModerationService) -> None:
    """Readiness follows the broker: a group membership kept in memory says nothing during an outage."""
    probe = BrokerProbe(service.settings)
    damp_reconnect_noise()

    @app.task
    async def probe_broker() -> None:
        run = asyncio.create_task(probe.run())
        try:
            while True:
                await asyncio.sleep(probe.interval_s / 2)
                service.broker_reachable = probe.reachable
                service.ready(app)
        finally:
            run.cancel()


def _wire_web(app: faust.App, service: ModerationService) -> None:
    registry = service.metrics.registry

    @app.page("/metrics")
    class MetricsPage(View):
        async def get(self, request: Request) -> Response:
            service.ready(app)
            return self.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    class HealthPage(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "alive"})

    @app.page("/readyz")
    class ReadyPage(View):
        async def get(self, request: Request) -> Response:
            ready = service.ready(app)
            body = {"ready": ready, "bundle": service.moderator.scorer.engine.bundle.version,
                    "consumer_joined": service.joined_group, "rebalancing": bool(app.rebalancing),
                    "broker_reachable": service.broker_reachable}
            return self.json(body, status=200 if ready else 503)
