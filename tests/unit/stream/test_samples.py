"""Sample traffic: varied posts that all decode, and malformed payloads of every decodable kind."""

from __future__ import annotations

import orjson

from feedwarden.stream import records as r
from feedwarden.stream.records import Invalid, Post, decode_post
from feedwarden.stream.samples import malformed_payloads, numbered_posts, sample_posts


def test_sample_posts_are_varied_valid_posts() -> None:
    posts = sample_posts()
    assert len(posts) >= 60
    assert len({p["id"] for p in posts}) == len(posts)
    assert all(isinstance(decode_post(orjson.dumps(p)), Post) for p in posts)
    kinds = {p["context"]["sample_kind"] for p in posts}  # type: ignore[index]
    assert {
        "scam",
        "phishing",
        "spam",
        "promo",
        "crypto",
        "news",
        "sports",
        "hate",
        "offensive",
        "clean",
    } <= kinds


def test_numbered_posts_cycle_with_unique_ids() -> None:
    posts = list(numbered_posts(150, prefix="x-"))
    assert len({p["id"] for p in posts}) == 150
    assert all(str(p["id"]).startswith("x-") for p in posts)


def test_malformed_payloads_cover_every_decodable_error_and_say_which() -> None:
    payloads = malformed_payloads(40)
    assert len(payloads) == 40
    for code, raw in payloads:
        result = decode_post(raw)
        assert isinstance(result, Invalid) and result.error == code, (code, raw[:60])
    unreachable_via_kafka = {r.TOO_LARGE, r.UNTOKENIZABLE}
    assert {code for code, _ in payloads} == set(r.ERROR_CODES) - unreachable_via_kafka
