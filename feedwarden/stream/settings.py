"""Worker settings, read once from environment variables and validated up front.

A bad value stops the worker at start with a message naming the variable,
instead of surfacing later as a broker or Faust error.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedwarden.models.bundle import default_bundle_path
from feedwarden.stream.records import MAX_TEXT_CHARS

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
PROVIDERS = ("auto", "cpu", "cuda")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_HOST_PORT = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d{1,5}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._\-]{1,249}$")


class SettingsError(ValueError):
    """An environment variable holds a value the worker cannot use."""


@dataclass(frozen=True)
class Topics:
    posts: str = "posts"
    decisions: str = "decisions"
    hide: str = "decisions.hide"
    warn: str = "decisions.warn"
    badge: str = "decisions.badge"
    dlq: str = "posts.dlq"

    def __post_init__(self) -> None:
        for name in self.all():
            if not _TOPIC.match(name) or name in (".", ".."):
                raise SettingsError(f"{name!r} is not a valid Kafka topic name")
        if len(set(self.all())) != len(self.all()):
            raise SettingsError("topic names must be distinct")

    def all(self) -> tuple[str, ...]:
        return (self.posts, self.decisions, self.hide, self.warn, self.badge, self.dlq)

    def for_action(self, action: str) -> str | None:
        """The per-action topic, or None for allow (which only goes to `decisions`)."""
        return {"hide": self.hide, "warn": self.warn, "badge": self.badge}.get(action)


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(f"security protocol {self.protocol!r} is not one of {SECURITY_PROTOCOLS}")
        if self.protocol.startswith("SASL"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise SettingsError(f"SASL mechanism {self.sasl_mechanism!r} is not one of {SASL_MECHANISMS}")
            if not self.username or not self.password:
                raise SettingsError(f"{self.protocol} needs a SASL username and password")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise SettingsError(f"CA file {self.ca_file} does not exist")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for an aiokafka client (admin, producer, consumer)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.protocol.startswith("SASL"):
            options |= {"sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.username,
                        "sasl_plain_password": self.password}
        return options


@dataclass(frozen=True)
class DriftSettings:
    """Drift windows, the sustained-drift rule and the model loop's topics (stream/loop.py)."""

    window_s: float = 300.0
    min_posts: int = 200
    alpha: float = 0.01
    sustain_k: int = 3
    sustain_m: int = 5
    cooldown_s: float = 6 * 3600.0
    registry: Path = Path("registry")
    stats_topic: str = "drift.stats"
    alerts_topic: str = "drift.alerts"
    requests_topic: str = "retrain.requests"
    updates_topic: str = "model.updates"
    shadow_topic: str = "decisions.shadow"

    def __post_init__(self) -> None:
        if not 1.0 <= self.window_s <= 86_400.0:
            raise SettingsError(f"FEEDWARDEN_DRIFT_WINDOW_SECONDS={self.window_s} not in [1, 86400]")
        _check_range("FEEDWARDEN_DRIFT_MIN_POSTS", self.min_posts, 1, 10_000_000)
        if not 0.0 < self.alpha < 1.0:
            raise SettingsError(f"FEEDWARDEN_DRIFT_ALPHA={self.alpha} not in (0, 1)")
        _check_range("FEEDWARDEN_DRIFT_SUSTAIN_M", self.sustain_m, 1, 1000)
        _check_range("FEEDWARDEN_DRIFT_SUSTAIN_K", self.sustain_k, 1, self.sustain_m)
        if self.cooldown_s < 0:
            raise SettingsError(f"FEEDWARDEN_DRIFT_COOLDOWN_SECONDS={self.cooldown_s} is negative")
        for name in self.topics():
            if not _TOPIC.match(name) or name in (".", ".."):
                raise SettingsError(f"{name!r} is not a valid Kafka topic name")
        if len(set(self.topics())) != len(self.topics()):
            raise SettingsError("drift and model-update topic names must be distinct")

    def topics(self) -> tuple[str, ...]:
        return (self.stats_topic, self.alerts_topic, self.requests_topic, self.updates_topic,
                self.shadow_topic)


@dataclass(frozen=True)
class Settings:
    bootstrap: str = DEFAULT_BOOTSTRAP
    topics: Topics = field(default_factory=Topics)
    batch_size: int = 256
    # How long an idle engine waits for more posts before it takes a batch (stream/batching.py).
    batch_wait_ms: int = 5
    # Micro-batches in flight: 2 lets one batch wait for the broker's acks while the next is decided.
    pipeline_depth: int = 2
    # How long the producer gathers decision records per partition before a request (Faust's
    # default 0 sent a request per broker round trip, and the broker's CPU per post doubled).
    producer_linger_ms: int = 5
    bundle: Path = field(default_factory=default_bundle_path)
    web_port: int = 6066
    web_bind: str = "0.0.0.0"
    max_text_chars: int = MAX_TEXT_CHARS
    threads: int | None = None
    providers: str = "auto"
    group_id: str = "feedwarden"
    partitions: int = 1
    session_timeout_s: float = 30.0
    # How often Faust commits the acked offsets. A crashed worker's decided but uncommitted posts
    # are decided again by whoever takes its partitions: about this many seconds of its throughput.
    commit_interval_s: float = 0.5
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    drift: DriftSettings = field(default_factory=DriftSettings)

    def __post_init__(self) -> None:
        for server in self.bootstrap.split(","):
            if not _HOST_PORT.match(server.strip()) or not 0 < int(server.rsplit(":", 1)[1]) < 65536:
                raise SettingsError(f"KAFKA_BOOTSTRAP entry {server!r} is not host:port")
        _check_range("FEEDWARDEN_BATCH_SIZE", self.batch_size, 1, 4096)
        _check_range("FEEDWARDEN_BATCH_WAIT_MS", self.batch_wait_ms, 0, 60_000)
        _check_range("FEEDWARDEN_PIPELINE_DEPTH", self.pipeline_depth, 1, 8)
        _check_range("FEEDWARDEN_PRODUCER_LINGER_MS", self.producer_linger_ms, 0, 1000)
        _check_range("FEEDWARDEN_WEB_PORT", self.web_port, 1, 65535)
        _check_range("FEEDWARDEN_MAX_TEXT_CHARS", self.max_text_chars, 1, MAX_TEXT_CHARS)
        _check_range("FEEDWARDEN_PARTITIONS", self.partitions, 1, 10_000)
        if self.threads is not None:
            _check_range("FEEDWARDEN_THREADS", self.threads, 1, 1024)
        if self.providers not in PROVIDERS:
            raise SettingsError(f"FEEDWARDEN_PROVIDERS={self.providers!r} is not one of {PROVIDERS}")
        if not self.group_id.strip():
            raise SettingsError("FEEDWARDEN_GROUP_ID must not be empty")
        if not 1.0 <= self.session_timeout_s <= 300.0:
            raise SettingsError(f"FEEDWARDEN_SESSION_TIMEOUT_S={self.session_timeout_s} not in [1, 300]")
        if not 0.1 <= self.commit_interval_s <= 60.0:
            raise SettingsError(f"FEEDWARDEN_COMMIT_INTERVAL_S={self.commit_interval_s} not in [0.1, 60]")
        if not (self.bundle / "manifest.json").is_file():
            raise SettingsError(f"FEEDWARDEN_BUNDLE={self.bundle} has no manifest.json")
        if set(self.drift.topics()) & set(self.topics.all()):
            raise SettingsError("drift and model-update topics must differ from the moderation topics")

    @property
    def batch_wait_s(self) -> float:
        return self.batch_wait_ms / 1000.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        get = _Reader(env)
        return cls(
            bootstrap=get.text("KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP),
            topics=Topics(
                posts=get.text("FEEDWARDEN_TOPIC_POSTS", "posts"),
                decisions=get.text("FEEDWARDEN_TOPIC_DECISIONS", "decisions"),
                hide=get.text("FEEDWARDEN_TOPIC_HIDE", "decisions.hide"),
                warn=get.text("FEEDWARDEN_TOPIC_WARN", "decisions.warn"),
                badge=get.text("FEEDWARDEN_TOPIC_BADGE", "decisions.badge"),
                dlq=get.text("FEEDWARDEN_TOPIC_DLQ", "posts.dlq"),
            ),
            batch_size=get.integer("FEEDWARDEN_BATCH_SIZE", 256),
            batch_wait_ms=get.integer("FEEDWARDEN_BATCH_WAIT_MS", 5),
            pipeline_depth=get.integer("FEEDWARDEN_PIPELINE_DEPTH", 2),
            producer_linger_ms=get.integer("FEEDWARDEN_PRODUCER_LINGER_MS", 5),
            bundle=Path(get.text("FEEDWARDEN_BUNDLE", str(default_bundle_path()))),
            web_port=get.integer("FEEDWARDEN_WEB_PORT", 6066),
            web_bind=get.text("FEEDWARDEN_WEB_BIND", "0.0.0.0"),
            max_text_chars=get.integer("FEEDWARDEN_MAX_TEXT_CHARS", MAX_TEXT_CHARS),
            threads=get.optional_integer("FEEDWARDEN_THREADS"),
            providers=get.text("FEEDWARDEN_PROVIDERS", "auto").lower(),
            group_id=get.text("FEEDWARDEN_GROUP_ID", "feedwarden"),
            partitions=get.integer("FEEDWARDEN_PARTITIONS", 1),
            session_timeout_s=get.number("FEEDWARDEN_SESSION_TIMEOUT_S", 30.0),
            commit_interval_s=get.number("FEEDWARDEN_COMMIT_INTERVAL_S", 0.5),
            security=KafkaSecurity(
                protocol=get.text("FEEDWARDEN_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper(),
                sasl_mechanism=get.optional_text("FEEDWARDEN_KAFKA_SASL_MECHANISM"),
                username=get.optional_text("FEEDWARDEN_KAFKA_SASL_USERNAME"),
                password=get.optional_text("FEEDWARDEN_KAFKA_SASL_PASSWORD"),
                ca_file=_optional_path(get.optional_text("FEEDWARDEN_KAFKA_CA_FILE")),
            ),
            drift=_drift_from_env(get),
        )


def _drift_from_env(get: _Reader) -> DriftSettings:
    return DriftSettings(
        window_s=get.number("FEEDWARDEN_DRIFT_WINDOW_SECONDS", 300.0),
        min_posts=get.integer("FEEDWARDEN_DRIFT_MIN_POSTS", 200),
        alpha=get.number("FEEDWARDEN_DRIFT_ALPHA", 0.01),
        sustain_k=get.integer("FEEDWARDEN_DRIFT_SUSTAIN_K", 3),
        sustain_m=get.integer("FEEDWARDEN_DRIFT_SUSTAIN_M", 5),
        cooldown_s=get.number("FEEDWARDEN_DRIFT_COOLDOWN_SECONDS", 6 * 3600.0),
        registry=Path(get.text("FEEDWARDEN_REGISTRY", "registry")),
        stats_topic=get.text("FEEDWARDEN_TOPIC_DRIFT_STATS", "drift.stats"),
        alerts_topic=get.text("FEEDWARDEN_TOPIC_DRIFT_ALERTS", "drift.alerts"),
        requests_topic=get.text("FEEDWARDEN_TOPIC_RETRAIN_REQUESTS", "retrain.requests"),
        updates_topic=get.text("FEEDWARDEN_TOPIC_MODEL_UPDATES", "model.updates"),
        shadow_topic=get.text("FEEDWARDEN_TOPIC_SHADOW", "decisions.shadow"),
    )


class _Reader:
    """Typed access to environment variables; errors name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def optional_text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional_text(name) or default

    def optional_integer(self, name: str) -> int | None:
        value = self.optional_text(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r} is not an integer") from None

    def integer(self, name: str, default: int) -> int:
        value = self.optional_integer(name)
        return default if value is None else value

    def number(self, name: str, default: float) -> float:
        value = self.optional_text(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r} is not a number") from None


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is not in [{low}, {high}]")
