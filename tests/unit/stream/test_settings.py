"""Settings from environment variables: defaults, parsing and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedwarden.models.bundle import Bundle
from feedwarden.stream.settings import KafkaSecurity, Settings, SettingsError, Topics


@pytest.fixture()
def env(tiny_bundle: Bundle) -> dict[str, str]:
    return {"FEEDWARDEN_BUNDLE": str(tiny_bundle.path)}


def test_defaults(env: dict[str, str], tiny_bundle: Bundle) -> None:
    settings = Settings.from_env(env)
    assert settings.bootstrap == "127.0.0.1:9092"
    assert settings.topics.all() == (
        "posts",
        "decisions",
        "decisions.hide",
        "decisions.warn",
        "decisions.badge",
        "posts.dlq",
    )
    assert (settings.batch_size, settings.batch_wait_ms, settings.web_port) == (256, 5, 6066)
    assert (settings.max_text_chars, settings.threads, settings.providers) == (50_000, None, "auto")
    assert settings.bundle == tiny_bundle.path
    assert settings.security == KafkaSecurity()
    assert settings.batch_wait_s == 0.005
    assert settings.producer_linger_ms == 5


def test_every_variable_is_read(env: dict[str, str], tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = Settings.from_env(
        env
        | {
            "KAFKA_BOOTSTRAP": "k1:9093,k2:9093",
            "FEEDWARDEN_TOPIC_POSTS": "in",
            "FEEDWARDEN_TOPIC_DECISIONS": "out",
            "FEEDWARDEN_TOPIC_HIDE": "h",
            "FEEDWARDEN_TOPIC_WARN": "w",
            "FEEDWARDEN_TOPIC_BADGE": "b",
            "FEEDWARDEN_TOPIC_DLQ": "dead",
            "FEEDWARDEN_BATCH_SIZE": "128",
            "FEEDWARDEN_BATCH_WAIT_MS": "20",
            "FEEDWARDEN_PRODUCER_LINGER_MS": "0",
            "FEEDWARDEN_WEB_PORT": "7000",
            "FEEDWARDEN_MAX_TEXT_CHARS": "1000",
            "FEEDWARDEN_THREADS": "2",
            "FEEDWARDEN_PROVIDERS": "CPU",
            "FEEDWARDEN_GROUP_ID": "g",
            "FEEDWARDEN_PARTITIONS": "6",
            "FEEDWARDEN_SESSION_TIMEOUT_S": "6",
            "FEEDWARDEN_COMMIT_INTERVAL_S": "0.5",
            "FEEDWARDEN_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "FEEDWARDEN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "FEEDWARDEN_KAFKA_SASL_USERNAME": "u",
            "FEEDWARDEN_KAFKA_SASL_PASSWORD": "secret",
            "FEEDWARDEN_KAFKA_CA_FILE": str(ca),
        }
    )
    assert settings.bootstrap == "k1:9093,k2:9093"
    assert settings.topics == Topics("in", "out", "h", "w", "b", "dead")
    assert (settings.batch_size, settings.batch_wait_ms, settings.web_port, settings.max_text_chars) == (
        128,
        20,
        7000,
        1000,
    )
    assert (settings.threads, settings.providers, settings.group_id, settings.partitions) == (
        2,
        "cpu",
        "g",
        6,
    )
    assert (settings.session_timeout_s, settings.commit_interval_s) == (6.0, 0.5)
    assert settings.producer_linger_ms == 0
    assert settings.security == KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "u", "secret", ca)
    assert settings.security.uses_tls
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("KAFKA_BOOTSTRAP", "localhost", "host:port"),
        ("KAFKA_BOOTSTRAP", "host:99999", "host:port"),
        ("KAFKA_BOOTSTRAP", "a b:9092", "host:port"),
        ("FEEDWARDEN_BATCH_SIZE", "0", "BATCH_SIZE"),
        ("FEEDWARDEN_BATCH_SIZE", "ten", "not an integer"),
        ("FEEDWARDEN_BATCH_WAIT_MS", "-1", "BATCH_WAIT_MS"),
        ("FEEDWARDEN_PRODUCER_LINGER_MS", "1001", "PRODUCER_LINGER_MS"),
        ("FEEDWARDEN_WEB_PORT", "70000", "WEB_PORT"),
        ("FEEDWARDEN_MAX_TEXT_CHARS", "50001", "MAX_TEXT_CHARS"),
        ("FEEDWARDEN_THREADS", "0", "THREADS"),
        ("FEEDWARDEN_PROVIDERS", "tpu", "PROVIDERS"),
        ("FEEDWARDEN_PARTITIONS", "0", "PARTITIONS"),
        ("FEEDWARDEN_SESSION_TIMEOUT_S", "soon", "not a number"),
        ("FEEDWARDEN_SESSION_TIMEOUT_S", "0.5", "SESSION_TIMEOUT"),
        ("FEEDWARDEN_COMMIT_INTERVAL_S", "0", "COMMIT_INTERVAL"),
        ("FEEDWARDEN_TOPIC_POSTS", "bad topic", "topic name"),
        ("FEEDWARDEN_TOPIC_DLQ", "decisions", "distinct"),
        ("FEEDWARDEN_BUNDLE", "/nonexistent", "manifest.json"),
        ("FEEDWARDEN_KAFKA_SECURITY_PROTOCOL", "TLS", "security protocol"),
        ("FEEDWARDEN_KAFKA_CA_FILE", "/nonexistent.pem", "CA file"),
    ],
)
def test_bad_values_name_the_problem(env: dict[str, str], name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env | {name: value})


def test_sasl_needs_mechanism_and_credentials(env: dict[str, str]) -> None:
    sasl = env | {"FEEDWARDEN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    with pytest.raises(SettingsError, match="mechanism"):
        Settings.from_env(sasl)
    with pytest.raises(SettingsError, match="username and password"):
        Settings.from_env(sasl | {"FEEDWARDEN_KAFKA_SASL_MECHANISM": "PLAIN"})
    ok = Settings.from_env(
        sasl
        | {
            "FEEDWARDEN_KAFKA_SASL_MECHANISM": "PLAIN",
            "FEEDWARDEN_KAFKA_SASL_USERNAME": "u",
            "FEEDWARDEN_KAFKA_SASL_PASSWORD": "p",
        }
    )
    assert not ok.security.uses_tls and ok.security.ssl_context() is None


def test_blank_values_mean_default(env: dict[str, str]) -> None:
    assert Settings.from_env(env | {"FEEDWARDEN_BATCH_SIZE": " ", "FEEDWARDEN_THREADS": ""}).batch_size == 256


def test_allow_has_no_action_topic() -> None:
    topics = Topics()
    assert [topics.for_action(a) for a in ("allow", "badge", "warn", "hide")] == [
        None,
        "decisions.badge",
        "decisions.warn",
        "decisions.hide",
    ]
