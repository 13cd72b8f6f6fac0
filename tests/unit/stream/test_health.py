"""Readiness follows the broker, the probe flips on real answers, and reconnect noise is damped."""

from __future__ import annotations

import asyncio
import logging

import pytest

from feedwarden.models.bundle import Bundle
from feedwarden.stream.app import ModerationService, create_app
from feedwarden.stream.broker import free_port
from feedwarden.stream.health import BrokerProbe, ReconnectNoise
from feedwarden.stream.settings import Settings


def test_an_unreachable_broker_makes_a_joined_worker_not_ready(tiny_bundle: Bundle) -> None:
    app = create_app(Settings(bundle=tiny_bundle.path, providers="cpu", web_port=16098))
    service: ModerationService = app.moderation  # type: ignore[attr-defined]
    service.joined_group = True
    assert service.ready(app)
    service.broker_reachable = False
    assert not service.ready(app)
    assert service.metrics.ready._value.get() == 0
    service.broker_reachable = True
    assert service.ready(app)


def test_the_probe_reports_a_closed_port_unreachable(tiny_bundle: Bundle) -> None:
    settings = Settings(bootstrap=f"127.0.0.1:{free_port()}", bundle=tiny_bundle.path, providers="cpu")
    probe = BrokerProbe(settings, interval_s=0.2, timeout_s=1.0)

    async def probe_once() -> None:
        task = asyncio.create_task(probe.run())
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(probe_once())
    assert probe.reachable is False


def _record(msg: str, level: int = logging.ERROR, name: str = "aiokafka.client") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, ("node 111",), None)


def test_reconnect_noise_passes_one_record_per_template_per_interval() -> None:
    now = [0.0]
    noise = ReconnectNoise(interval_s=10.0, clock=lambda: now[0])
    assert noise.filter(_record("Unable connect to node with id %s"))
    passed = 0
    for _ in range(500):
        now[0] += 0.01
        passed += noise.filter(_record("Unable connect to node with id %s"))
    assert passed == 0
    assert noise.filter(_record("Unable to update metadata from %s")), "another template passes"
    assert noise.filter(_record("debug chatter %s", logging.INFO)), "below WARNING is never damped"
    now[0] += 10.0
    record = _record("Unable connect to node with id %s")
    assert noise.filter(record)
    assert "500 similar" in str(record.msg)


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR])
def test_damped_levels(level: int) -> None:
    noise = ReconnectNoise(interval_s=60.0)
    assert noise.filter(_record("x %s", level))
    assert not noise.filter(_record("x %s", level))
