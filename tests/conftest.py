"""Shared fixtures: the tiny test bundle, the released bundle and THE broker.

The broker for integration tests is chosen in one place:
`KAFKA_BOOTSTRAP` if set, else Apache Kafka in a container when testcontainers
is installed and a Docker engine answers, else the embedded Tansu broker
(also when Docker answers but testcontainers is missing).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedwarden.models.bundle import Bundle, default_bundle_path, load_bundle
from tests.tiny_bundle import build_tiny_bundle


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A real but tiny keyword bundle: fast, deterministic, no training needed."""
    return build_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="session")
def released_bundle() -> Bundle:
    """The packaged default bundle; integration tests run against what ships."""
    path = Path(os.environ.get("FEEDWARDEN_TEST_BUNDLE", default_bundle_path()))
    if not (path / "manifest.json").is_file():
        pytest.fail(f"no released bundle at {path}; integration tests need the real default bundle")
    return load_bundle(path)


def _docker_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of the broker every integration test talks to."""
    configured = os.environ.get("KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    kafka = _kafka_container_module()
    if kafka is not None:
        with kafka.KafkaContainer() as container:
            yield container.get_bootstrap_server()
        return
    from feedwarden.stream.broker import start_broker

    with start_broker() as broker:
        yield broker.bootstrap


def _kafka_container_module() -> Any:
    """testcontainers' Kafka module when it is installed and a Docker engine answers, else None."""
    if not _docker_answers():
        return None
    try:
        return importlib.import_module("testcontainers.kafka")
    except ImportError:
        return None
