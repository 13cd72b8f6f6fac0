"""The worker's Faust transport: a short fetch long-poll (see stream/transport.py)."""

from __future__ import annotations

import inspect

import aiokafka
import faust

from feedwarden.stream.transport import FETCH_MAX_WAIT_MS, SCHEME, Consumer, Transport


def test_the_scheme_selects_our_transport_and_consumer() -> None:
    app = faust.App("transport-test", broker=f"{SCHEME}://127.0.0.1:9", autodiscover=False)
    assert isinstance(app.transport, Transport)
    assert app.transport.Consumer is Consumer
    assert FETCH_MAX_WAIT_MS <= 500


def test_aiokafka_still_reads_the_attribute_we_set() -> None:
    # We set AIOKafkaConsumer._fetch_max_wait_ms after Faust builds the consumer; the
    # Fetcher is created in start() from that attribute. Fail loudly if aiokafka changes it.
    assert "self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    init = inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in init
