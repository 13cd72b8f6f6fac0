"""The model loop on a worker, wired into Faust: drift windows, hot swaps, shadow scoring.

- Drift (`stream.drift`): the batch hook sends per-label window stats to the
  drift-stats topic; the `drift-merge` agent merges them into the
  `drift-cells` tumbling table (one cell per bundle version and window); a
  timer evaluates closed windows and publishes to drift.alerts and
  retrain.requests.
- Updates (`stream.updates`): a task follows model.updates and hot-swaps the
  serving Moderator, or loads a shadow (`stream.shadow`).

Several workers: the drift-stats topic has ONE partition, so its table has
one changelog partition and exactly one worker (whichever owns it in the
consumer group) holds every label's windows; only that worker evaluates
(the timer checks it owns the partition actively, not as a standby). The
evaluation needs all labels of a window in one place anyway, since the
multiple-testing correction is across labels, and the traffic is one
message (and one changelog record) per batch. If that worker dies the
partition moves with its table, restored from the changelog. model.updates, by contrast, must
reach every worker, so it is read by a plain consumer without a group, not
by an agent (an agent would share its partition with one worker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import faust
import orjson
from aiokafka import AIOKafkaConsumer
from faust.types import TP, FieldDescriptorT, StreamT
from faust.web import Request, Response, View

from feedwarden.drift import DriftError, SustainedDrift, WindowStats
from feedwarden.models.registry import Registry
from feedwarden.models.updates import ModelUpdate, UpdateError, decode
from feedwarden.stream.drift import (
    DriftMonitor,
    DriftPlan,
    Entry,
    Verdict,
    batch_stats,
    horizon,
)
from feedwarden.stream.settings import Settings
from feedwarden.stream.shadow import Comparison, Shadow
from feedwarden.stream.topology import BatchReport, Incoming, Moderator, Scorer
from feedwarden.stream.updates import Serving, SwapRejected, current_promotion, load_moderator, triage

if TYPE_CHECKING:
    from feedwarden.stream.app import ModerationService

log = logging.getLogger(__name__)


class StatsMessage(faust.Record, serializer="json"):
    """Every label's stats for one batch, on the drift-stats topic.

    One message per batch, not per label: the labels of a batch share its
    window, and one record instead of one per label keeps the broker round
    trips of drift off the worker's hot path.
    """

    at: float  # the window's midpoint: what places the message in its tumbling window
    version: str
    stats: list[dict[str, Any]]  # WindowStats.to_dict() per label


# Enqueues one record (topic, key, value); delivery is not awaited: drift stats,
# alerts and shadow decisions are best-effort, unlike the decisions themselves.
Send = Callable[[str, "str | bytes", "bytes | StatsMessage"], Awaitable[None]]


def loop_topics(settings: Settings) -> dict[str, int]:
    """The loop's topics and partition counts, for topic creation."""
    drift = settings.drift
    return {drift.stats_topic: 1, drift.updates_topic: 1, drift.alerts_topic: 1,
            drift.requests_topic: 1, drift.shadow_topic: settings.partitions}


def model_info(scorer: Scorer) -> dict[str, str]:
    bundle = scorer.engine.bundle
    return {"bundle": bundle.manifest.name, "version": bundle.version,
            "policy_version": scorer.policy.version, "provider": scorer.engine.provider}


class ModelLoop:
    """Drift, hot swap and shadow state of one worker; Faust-free: records leave through `send`."""

    def __init__(self, service: ModerationService, send: Send) -> None:
        self.service = service
        self.settings = service.settings
        self.metrics = service.metrics
        self.send = send
        drift = self.settings.drift
        self.registry = Registry(drift.registry)
        self.monitor = DriftMonitor(
            DriftPlan.of(service.moderator.scorer), drift.window_s, started_at=time.time(),
            min_posts=drift.min_posts, alpha=drift.alpha,
            sustained=SustainedDrift(drift.sustain_k, drift.sustain_m, drift.cooldown_s),
        )
        self.shadow: Shadow | None = None
        # Loading a bundle takes seconds; not on the inference thread, which keeps serving.
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedwarden-load")
        self._export_references()

    @property
    def serving(self) -> Serving:
        version = self.service.moderator.scorer.engine.bundle.version
        return Serving(version, None if self.shadow is None else self.shadow.version)

    # ------------------------------------------------------------ per batch

    async def on_batch(self, messages: Sequence[Incoming], report: BatchReport, moderator: Moderator) -> None:
        await self._send_stats(report, moderator)
        await self._score_shadow(messages, report)

    async def _send_stats(self, report: BatchReport, moderator: Moderator) -> None:
        plan = self.monitor.plan
        if moderator.scorer.engine.bundle.version != plan.version:
            return  # decided by a bundle swapped out meanwhile: its references are gone
        window_s = self.settings.drift.window_s
        per_label = batch_stats(report, plan, at=time.time(), window_s=window_s)
        if not per_label:
            return
        message = StatsMessage(at=per_label[0].window_start + window_s / 2, version=plan.version,
                               stats=[stats.to_dict() for stats in per_label])
        await self.send(self.settings.drift.stats_topic, plan.version, message)

    async def _score_shadow(self, messages: Sequence[Incoming], report: BatchReport) -> None:
        shadow = self.shadow
        if shadow is None or not report.decided:
            return
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        theirs = await loop.run_in_executor(self.service.executor, shadow.decide, messages)
        self.metrics.stage_seconds.labels("shadow").observe(time.perf_counter() - started)
        for record in theirs.outgoing:
            await self.send(record.topic, record.key, record.value)
        before = shadow.comparison.posts
        shadow.comparison.add(report, theirs)
        self.metrics.shadow_posts.inc(shadow.comparison.posts - before)
        self._export_shadow(shadow.comparison)

    # ------------------------------------------------------------ drift windows

    def merge(
        self, version: str, cells: Sequence[dict[str, Any]], current: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The table value (label -> stats) after one stats message's `cells` (one per label,
        all of one window); None when that window was evaluated already. A malformed cell
        is logged and skipped: a bad message must not stop drift."""
        merged = dict(current or {})
        for cell in cells:
            try:
                stats = WindowStats.from_dict(cell)
                if self.monitor.is_evaluated(version, stats.window_start):
                    self.metrics.drift_late_stats.inc()
                    return None
                before = merged.get(stats.label)
                if before is not None:
                    stats = WindowStats.from_dict(before).merge(stats)
                merged[stats.label] = stats.to_dict()
            except (DriftError, KeyError, TypeError, ValueError, AttributeError) as exc:
                log.error("drift stats skipped: %r", exc)
        return merged

    async def evaluate_closed(self, entries: Iterable[Entry]) -> list[Verdict]:
        verdicts = []
        for stats in self.monitor.due(entries, time.time()).values():
            verdict = self.monitor.evaluate(stats)
            await self._publish(verdict)
            verdicts.append(verdict)
        return verdicts

    async def _publish(self, verdict: Verdict) -> None:
        drift = self.settings.drift
        for alert in verdict.alerts:
            log.warning("drift: %s %s %s=%.1f (critical %.1f) observed %.4f vs reference %.4f, n=%d",
                        alert.severity, alert.label, alert.statistic.name, alert.statistic.value,
                        alert.statistic.critical_value, alert.observed_rate, alert.reference_rate, alert.n)
            await self.send(drift.alerts_topic, alert.label, orjson.dumps(alert.to_dict()))
            self.metrics.drift_alerts.labels(alert.label, alert.severity).inc()
        if verdict.request is not None:
            request = verdict.request
            log.warning("sustained drift of %s under %s: retrain requested", list(request.labels),
                        request.model_version)
            await self.send(drift.requests_topic, request.model_version, orjson.dumps(request.to_dict()))
            self.metrics.retrain_requests.inc()
        for label, stats in verdict.stats.items():
            if stats.n:
                self.metrics.drift_observed_rate.labels(label).set(stats.flagged / stats.n)
        for (label, test), ratio in verdict.ratios.items():
            self.metrics.drift_statistic.labels(label, test).set(ratio)

    def _export_references(self) -> None:
        m = self.metrics
        for gauge in (m.drift_observed_rate, m.drift_reference_rate, m.drift_statistic):
            gauge.clear()  # the new bundle may monitor other labels
        for label, reference in self.monitor.plan.references.items():
            m.drift_reference_rate.labels(label).set(reference.rate)

    # ------------------------------------------------------------ model updates

    def serve_registry_current(self) -> None:
        """At start, swap to the registry's current version if it is not the configured bundle.

        model.updates would get there too, but only once replayed, and the
        first batches would meanwhile be decided by a bundle the registry has
        moved past. Blocking: called while the app is built, like the first load.
        """
        current = current_promotion(self.registry)
        if current is None or current.version == self.serving.version:
            return
        update = ModelUpdate.from_promotion(current)
        try:
            moderator = load_moderator(self.registry, update, self.settings, self.settings.topics)
        except SwapRejected as exc:
            self._reject(exc, update.version)
            return
        self._swap(moderator, update)

    async def on_update(self, raw: bytes) -> None:
        """One model.updates message: apply it, or log why not. Never raises on bad input."""
        try:
            update = decode(raw)
        except UpdateError as exc:
            self._reject(SwapRejected("malformed", str(exc)), "?")
            return
        skip = triage(update, self.serving, current_promotion(self.registry))
        if skip is not None:
            log.info("model.updates: %s", skip)
            return
        topics = self.settings.topics
        if update.event == "shadow":
            topics = replace(topics, decisions=self.settings.drift.shadow_topic)
        try:
            moderator = await asyncio.get_running_loop().run_in_executor(
                self.loader, load_moderator, self.registry, update, self.settings, topics
            )
        except SwapRejected as exc:
            self._reject(exc, update.version)
            return
        if update.event == "shadow":
            self._start_shadow(moderator)
        else:
            self._swap(moderator, update)

    def _reject(self, exc: SwapRejected, version: str) -> None:
        self.metrics.bundle_rejected.labels(exc.reason).inc()
        log.error("model update to %s REJECTED (%s), still serving %s: %s",
                  version, exc.reason, self.serving.version, exc.detail)

    def _swap(self, moderator: Moderator, update: ModelUpdate) -> None:
        """Between batches by construction: the agent reads `service.moderator` once per batch."""
        before = self.serving.version
        self.service.moderator = moderator
        self.metrics.model_info.info(model_info(moderator.scorer))
        self.metrics.bundle_swaps.inc()
        self.monitor.reset(DriftPlan.of(moderator.scorer))
        self._export_references()
        self._drop_shadow()
        log.warning("model %s: now serving %s (was %s): %s",
                    update.event, update.version, before, update.reason)

    def _start_shadow(self, moderator: Moderator) -> None:
        serving = self.serving.version
        self.shadow = Shadow(moderator, Comparison(moderator.scorer.engine.bundle.version, serving))
        self.metrics.shadow_info.info({"version": self.shadow.version, "serving_version": serving})
        self.metrics.shadow_flag_rate.clear()
        log.warning("shadow: scoring every batch with %s too (about twice the inference per batch)",
                    self.shadow.version)

    def _drop_shadow(self) -> None:
        if self.shadow is not None:
            log.info("shadow %s dropped: %s", self.shadow.version, self.shadow.comparison.summary())
        self.shadow = None
        self.metrics.shadow_info.info({"version": "", "serving_version": ""})
        self.metrics.shadow_flag_rate.clear()

    def _export_shadow(self, comparison: Comparison) -> None:
        for label, (ours, theirs) in comparison.rates().items():
            self.metrics.shadow_flag_rate.labels(label, "serving").set(ours)
            self.metrics.shadow_flag_rate.labels(label, "shadow").set(theirs)
        self.metrics.shadow_action_agreement.set(comparison.agreement())

    def shadow_summary(self) -> dict[str, Any]:
        return {"shadow": None if self.shadow is None else self.shadow.comparison.summary()}


# ---------------------------------------------------------------- Faust wiring


def wire_model_loop(app: faust.App, service: ModerationService) -> ModelLoop:
    """Add the loop's topics, table, agent, timer, task and /shadow page to `app`."""
    settings = service.settings
    drift = settings.drift
    topics = {name: app.topic(name, key_type=bytes, value_type=bytes, partitions=n)
              for name, n in loop_topics(settings).items() if name != drift.stats_topic}
    stats_topic = app.topic(drift.stats_topic, key_type=str, value_type=StatsMessage, partitions=1,
                            key_serializer="raw", value_serializer="json")

    async def send(topic: str, key: str | bytes, value: bytes | StatsMessage) -> None:
        target = stats_topic if topic == drift.stats_topic else topics[topic]
        await target.send(key=key.encode() if isinstance(key, str) else key, value=value, force=True)

    model_loop = ModelLoop(service, send)
    model_loop.serve_registry_current()
    previous = service.on_batch

    async def on_batch(messages: Sequence[Incoming], report: BatchReport, moderator: Moderator) -> None:
        if previous is not None:
            await previous(messages, report, moderator)
        await model_loop.on_batch(messages, report, moderator)

    service.on_batch = on_batch
    _wire_drift(app, model_loop, stats_topic)
    _wire_updates(app, model_loop)
    _wire_shadow_page(app, model_loop)
    return model_loop


def _wire_drift(app: faust.App, model_loop: ModelLoop, stats_topic: faust.TopicT) -> None:
    drift = model_loop.settings.drift
    windows = app.Table(
        "drift-cells", default=None, partitions=1,
        schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
    ).tumbling(drift.window_s, expires=horizon(drift.window_s))
    # Faust turns the class attribute into a field descriptor; mypy sees the float.
    table = windows.relative_to_field(cast(FieldDescriptorT, StatsMessage.at))
    owner = TP(drift.stats_topic, 0)

    @app.agent(stats_topic, name="drift-merge", concurrency=1)
    async def merge(stream: StreamT) -> None:
        async for message in stream:
            key = str(message.version)
            current = table[key].value() if key in table else None  # default=None makes [] raise
            value = model_loop.merge(key, list(message.stats or ()), current)
            if value is not None:
                table[key] = value

    @app.timer(min(5.0, max(0.5, drift.window_s / 10)))
    async def evaluate() -> None:
        if owner in app.assignor.assigned_actives():
            await model_loop.evaluate_closed(_entries(table.table.data))


def _entries(data: Any) -> Iterator[Entry]:
    """Table cells as entries; the store's keys are (version, (start, end)) for a windowed table."""
    for (version, _window), cell in list(data.items()):
        for stats in (cell or {}).values():
            yield Entry(version, stats["label"], WindowStats.from_dict(stats))


def _wire_updates(app: faust.App, model_loop: ModelLoop) -> None:
    settings = model_loop.settings

    @app.task
    async def follow_updates() -> None:
        consumer = AIOKafkaConsumer(
            settings.drift.updates_topic, bootstrap_servers=settings.bootstrap, group_id=None,
            auto_offset_reset="earliest", enable_auto_commit=False, **settings.security.client_options(),
        )
        await consumer.start()
        try:
            async for message in consumer:
                await model_loop.on_update(message.value or b"")
        finally:
            await consumer.stop()


def _wire_shadow_page(app: faust.App, model_loop: ModelLoop) -> None:
    @app.page("/shadow")
    class ShadowPage(View):
        async def get(self, request: Request) -> Response:
            return self.json(model_loop.shadow_summary())
