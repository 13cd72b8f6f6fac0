"""Kafka TLS/SASL settings reach every client: Faust's broker_credentials (consumer and producer),
the model.updates follower, the broker probe and topic creation (aiokafka keyword arguments)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import certifi
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from feedwarden.models.bundle import Bundle
from feedwarden.stream.app import create_app
from feedwarden.stream.health import BrokerProbe
from feedwarden.stream.settings import Settings


def _env(tiny_bundle: Bundle, **security: str) -> dict[str, str]:
    return {"FEEDWARDEN_BUNDLE": str(tiny_bundle.path), "FEEDWARDEN_PROVIDERS": "cpu",
            "FEEDWARDEN_WEB_PORT": "16097", "KAFKA_BOOTSTRAP": "kafka-0:9093,kafka-1:9093",
            **{f"FEEDWARDEN_KAFKA_{k.upper()}": v for k, v in security.items()}}


def _aiokafka_auth(settings: Settings) -> dict[str, object]:
    app = create_app(settings)
    return dict(credentials_to_aiokafka_auth(app.conf.broker_credentials))


async def _probe_auth(settings: Settings) -> tuple[str, str]:
    client = BrokerProbe(settings)._client()
    try:
        return client._security_protocol, client._sasl_mechanism
    finally:
        await client.close()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_reaches_faust_and_every_aiokafka_client(tiny_bundle: Bundle, mechanism: str) -> None:
    settings = Settings.from_env(_env(
        tiny_bundle, security_protocol="sasl_ssl", sasl_mechanism=mechanism, sasl_username="svc-feedwarden",
        sasl_password="s3cret", ca_file=certifi.where()))
    auth = _aiokafka_auth(settings)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == mechanism
    assert auth["sasl_plain_username"] == "svc-feedwarden" and auth["sasl_plain_password"] == "s3cret"
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs(), "the configured CA file is loaded"
    options = settings.security.client_options()  # model.updates follower and topic creation
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "svc-feedwarden" and options["sasl_plain_password"] == "s3cret"
    assert asyncio.run(_probe_auth(settings)) == ("SASL_SSL", mechanism)
    assert "s3cret" not in repr(settings), "the password stays out of reprs (and so out of logs)"


def test_sasl_plaintext_has_no_tls(tiny_bundle: Bundle) -> None:
    settings = Settings.from_env(_env(tiny_bundle, security_protocol="SASL_PLAINTEXT",
                                      sasl_mechanism="SCRAM-SHA-256", sasl_username="u", sasl_password="p"))
    auth = _aiokafka_auth(settings)
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["ssl_context"] is None


def test_ssl_alone_gives_tls_credentials(tiny_bundle: Bundle) -> None:
    settings = Settings.from_env(_env(tiny_bundle, security_protocol="SSL", ca_file=certifi.where()))
    auth = _aiokafka_auth(settings)
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)
    assert settings.security.client_options()["security_protocol"] == "SSL"


def test_plaintext_by_default(tiny_bundle: Bundle) -> None:
    settings = Settings.from_env(_env(tiny_bundle))
    assert _aiokafka_auth(settings) == {"security_protocol": "PLAINTEXT"}
    assert settings.security.client_options() == {"security_protocol": "PLAINTEXT"}


def test_a_missing_ca_file_is_refused_at_start(tiny_bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CA file"):
        Settings.from_env(_env(tiny_bundle, security_protocol="SSL", ca_file=str(tmp_path / "nope.pem")))
