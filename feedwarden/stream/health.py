"""Broker reachability for /readyz, and a damper on the Kafka client's reconnect log storm.

Faust's consumer keeps its group membership in memory when the broker goes
away, so "joined and not rebalancing" stays true through an outage. A probe
asks the broker for metadata every few seconds on its own connection; the
worker is ready only while that succeeds.

While the broker is down, aiokafka logs every failed connection attempt of
every client (consumer, producer, coordinator, fetcher) at ERROR, several
per 100 ms. `ReconnectNoise` lets one record per message template through
per interval and counts the rest into the next one that passes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from feedwarden.stream.settings import Settings

log = logging.getLogger(__name__)

STOP_DEADLINE_S = 25.0  # within Kubernetes' default 30 s grace period
PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 5.0
NOISY_LOGGERS = (
    "aiokafka", "aiokafka.client", "aiokafka.conn", "aiokafka.cluster", "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher", "aiokafka.consumer.group_coordinator", "aiokafka.producer.producer",
    "aiokafka.producer.sender", "faust.transport.drivers.aiokafka",
)


class BrokerProbe:
    """`reachable` is True while a metadata request to the broker succeeds."""

    def __init__(self, settings: Settings, interval_s: float = PROBE_INTERVAL_S,
                 timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.reachable = True  # until a probe says otherwise; joining the group gates readiness first

    def _client(self) -> AIOKafkaClient:
        options: dict[str, Any] = self.settings.security.client_options()
        return AIOKafkaClient(bootstrap_servers=self.settings.bootstrap, client_id="feedwarden-probe",
                              request_timeout_ms=int(self.timeout_s * 1000), **options)

    async def run(self) -> None:
        """Probe forever (a Faust task); flips `reachable` and logs each change once."""
        client = self._client()
        bootstrapped = False
        try:
            while True:
                started = time.monotonic()
                try:
                    if not bootstrapped:
                        await asyncio.wait_for(client.bootstrap(), self.timeout_s)
                        bootstrapped = True
                    await asyncio.wait_for(client.fetch_all_metadata(), self.timeout_s)
                    self._set(True)
                except (TimeoutError, KafkaError, OSError) as exc:
                    self._set(False, exc)
                await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
        finally:
            await client.close()

    def _set(self, reachable: bool, exc: BaseException | None = None) -> None:
        if reachable != self.reachable:
            if reachable:
                log.warning("broker %s reachable again", self.settings.bootstrap)
            else:
                log.error("broker %s unreachable (%s): not ready until it answers",
                          self.settings.bootstrap, type(exc).__name__)
        self.reachable = reachable


def exit_after(deadline_s: float = STOP_DEADLINE_S, code: int = 0) -> threading.Thread:
    """End the process if a stop is still running after `deadline_s` (a daemon thread).

    With the broker gone, aiokafka's consumer cannot stop: a fetch task
    cancelled during its retry back-off re-raises CancelledError out of
    `Fetcher.close`, Faust's consumer thread dies in its shutdown and the
    worker waits for it forever. Nothing is lost by leaving anyway: offsets
    are committed only for decided posts, so whatever is uncommitted is
    redelivered to the next owner.
    """

    def expire() -> None:
        time.sleep(deadline_s)
        log.error("stop still running after %.0fs (broker unreachable?): exiting now; posts whose offsets "
                  "were not committed are redelivered", deadline_s)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)

    thread = threading.Thread(target=expire, name="feedwarden-stop-deadline", daemon=True)
    thread.start()
    return thread


class ReconnectNoise(logging.Filter):
    """Pass one record per (logger, message template) per `interval_s`; count the rest."""

    def __init__(self, interval_s: float = 10.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} similar in the last {now - (last or now):.0f}s suppressed]"
        if len(self._last) > 1000:  # templates are few; bound it anyway
            self._last.clear()
        return True


def damp_reconnect_noise(interval_s: float = 10.0) -> ReconnectNoise:
    """Install the filter on aiokafka's loggers (idempotent per process)."""
    noise = ReconnectNoise(interval_s)
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ReconnectNoise) for f in logger.filters):
            logger.addFilter(noise)
    return noise
