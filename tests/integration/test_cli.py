"""The `feedwarden` commands as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from feedwarden.models.bundle import Bundle
from feedwarden.stream.broker import free_port

pytestmark = pytest.mark.integration


def feedwarden(*args: str) -> list[str]:
    return [sys.executable, "-m", "feedwarden.cli", *args]


def test_run_once_decides_the_whole_sample_stream(released_bundle: Bundle) -> None:
    env = os.environ | {"FEEDWARDEN_BUNDLE": str(released_bundle.path)}
    done = subprocess.run(
        feedwarden("run", "--once", "--web-port", str(free_port()), "--timeout", "90"),
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 60 decisions, 16 dead letters" in done.stdout
    assert done.stdout.count("DLQ ") == 16


def test_run_stops_every_child_on_sigterm(released_bundle: Bundle) -> None:
    env = os.environ | {"FEEDWARDEN_BUNDLE": str(released_bundle.path)}
    run = subprocess.Popen(
        feedwarden("run", "--web-port", str(free_port())), env=env, stdout=subprocess.PIPE, text=True
    )
    assert run.stdout is not None
    lines = [run.stdout.readline() for _ in range(2)]
    worker_pid = int(lines[1].split("pid ")[1].split(";")[0])
    time.sleep(1)
    run.send_signal(signal.SIGTERM)
    assert run.wait(60) == 130
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)


def test_worker_refuses_bad_settings_with_a_message() -> None:
    env = os.environ | {"FEEDWARDEN_BATCH_SIZE": "0"}
    done = subprocess.run(feedwarden("worker"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "FEEDWARDEN_BATCH_SIZE" in done.stderr
