"""Fault-suite fixtures: worker subprocesses that never outlive their test."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import Worker

WorkerFactory = Callable[[dict[str, str], str], Worker]


@pytest.fixture()
def spawn(tmp_path: Path) -> Iterator[WorkerFactory]:
    """`spawn(env, name)` starts a `feedwarden worker`; whatever is still running at teardown is killed."""
    started: list[Worker] = []

    def factory(env: dict[str, str], name: str) -> Worker:
        worker = Worker(dict(env), tmp_path / f"{name}.log")
        worker.start()
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        if worker.alive():
            worker.stop(signal.SIGKILL, timeout=10)
