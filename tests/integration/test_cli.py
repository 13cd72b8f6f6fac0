"""The `feedwarden` commands as a user runs them."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

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


@pytest.mark.parametrize("when", ["starting", "after the stream"])
def test_run_stops_every_child_on_sigterm(released_bundle: Bundle, when: str) -> None:
    env = os.environ | {"FEEDWARDEN_BUNDLE": str(released_bundle.path)}
    run = subprocess.Popen(
        feedwarden("run", "--web-port", str(free_port())), env=env, stdout=subprocess.PIPE, text=True
    )
    assert run.stdout is not None
    stdout = run.stdout
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()  # read on a thread, so a get can time out

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    lines.get(timeout=60)
    worker_pid = int(lines.get(timeout=60).split("pid ")[1].split(";")[0])
    if when == "after the stream":  # without --once it keeps watching, but says when all is decided
        while not (line := lines.get(timeout=120)).startswith("done:"):
            pass
        assert "done: 60 decisions, 16 dead letters" in line and "Ctrl-C stops" in line
    run.send_signal(signal.SIGTERM)
    assert run.wait(60) == 130
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)


def test_worker_refuses_bad_settings_with_a_message() -> None:
    env = os.environ | {"FEEDWARDEN_BATCH_SIZE": "0"}
    done = subprocess.run(feedwarden("worker"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "FEEDWARDEN_BATCH_SIZE" in done.stderr
