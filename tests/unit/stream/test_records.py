"""Wire records: every input decodes to a Post or an Invalid with a known code, never an exception."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwarden.policy import Decision, LabelHit
from feedwarden.stream import records as r
from feedwarden.stream.records import Invalid, Post, decode_post, encode_dead_letter, encode_decision


def js(value: Any) -> bytes:
    return orjson.dumps(value)


def test_valid_post_keeps_known_fields_and_ignores_unknown() -> None:
    raw = js(
        {
            "id": "p1",
            "text": "hi",
            "platform": "x",
            "author_id": "a",
            "created_at": "2026-01-02T03:04:05Z",
            "lang": "en",
            "context": {"thread": 1},
            "extra": [1, 2],
        }
    )
    assert decode_post(raw) == Post("p1", "hi", "x", "a", "2026-01-02T03:04:05Z", "en")


def test_empty_text_is_a_valid_post() -> None:
    assert decode_post(js({"id": "p", "text": ""})) == Post("p", "")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, r.EMPTY),
        (b"", r.EMPTY),
        (b"x" * (r.MAX_PAYLOAD_BYTES + 1), r.TOO_LARGE),
        (b'{"id": "a", "text": "\xff"}', r.NOT_UTF8),
        (b"{", r.NOT_JSON),
        (b'{"id": "a", "text": "\\ud800"}', r.NOT_JSON),  # lone surrogate
        (b"[1, 2]", r.NOT_OBJECT),
        (b"null", r.NOT_OBJECT),
        (b"42", r.NOT_OBJECT),
        (js({"text": "t"}), r.MISSING_ID),
        (js({"id": 1, "text": "t"}), r.BAD_ID),
        (js({"id": "", "text": "t"}), r.BAD_ID),
        (js({"id": " \t", "text": "t"}), r.BAD_ID),
        (js({"id": "x" * (r.MAX_ID_CHARS + 1), "text": "t"}), r.BAD_ID),
        (js({"id": "a"}), r.MISSING_TEXT),
        (js({"id": "a", "text": None}), r.BAD_TEXT),
        (js({"id": "a", "text": 3}), r.BAD_TEXT),
        (js({"id": "a", "text": "x" * (r.MAX_TEXT_CHARS + 1)}), r.TEXT_TOO_LONG),
        (js({"id": "a", "text": "t", "lang": 1}), r.BAD_FIELD),
        (js({"id": "a", "text": "t", "created_at": "2026-01-02"}), r.BAD_FIELD),
        (js({"id": "a", "text": "t", "created_at": "2026-01-02T03:04:05"}), r.BAD_FIELD),  # no zone
    ],
)
def test_each_defect_has_its_code(raw: bytes | None, code: str) -> None:
    result = decode_post(raw)
    assert isinstance(result, Invalid)
    assert result.error == code
    assert result.detail


def test_max_text_chars_is_configurable() -> None:
    assert isinstance(decode_post(js({"id": "a", "text": "abcd"}), max_text_chars=4), Post)
    result = decode_post(js({"id": "a", "text": "abcde"}), max_text_chars=4)
    assert isinstance(result, Invalid) and result.error == r.TEXT_TOO_LONG


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
POST_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON_VALUES | st.text(),
        "text": JSON_VALUES | st.text(),
        "lang": JSON_VALUES,
        "created_at": JSON_VALUES | st.sampled_from(["2026-01-01T00:00:00Z", "now", ""]),
    },
)


def std_json(value: Any) -> bytes:
    """Any JSON the standard library writes, including integers beyond 64 bits."""
    return json.dumps(value).encode()


def assert_decodes_cleanly(raw: bytes) -> None:
    result = decode_post(raw)
    assert isinstance(result, Post | Invalid)
    if isinstance(result, Invalid):
        assert result.error in r.ERROR_CODES
    else:
        assert isinstance(result.id, str) and result.id.strip()
        assert isinstance(result.text, str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(raw: bytes) -> None:
    assert_decodes_cleanly(raw)


@settings(max_examples=300, deadline=None)
@given(POST_LIKE)
def test_random_post_shapes_never_raise(value: dict[str, Any]) -> None:
    assert_decodes_cleanly(std_json(value))


@settings(max_examples=100, deadline=None)
@given(JSON_VALUES)
def test_random_json_never_raises(value: Any) -> None:
    assert_decodes_cleanly(std_json(value))


def test_decision_record_follows_the_contract() -> None:
    hit = LabelHit("scam", "safety", 0.912, 0.9, "hide")
    record = orjson.loads(
        encode_decision(
            "p1",
            Decision("hide", (hit,)),
            model={"safety": "v1", "topic": "v1"},
            policy_version="pv",
            decided_at="2026-01-01T00:00:00.000Z",
            latency_ms=12.34567,
        )
    )
    assert record == {
        "post_id": "p1",
        "action": "hide",
        "labels": [
            {"label": "scam", "head": "safety", "score": 0.912, "threshold": 0.9, "action": "hide"}
        ],
        "model": {"safety": "v1", "topic": "v1"},
        "policy_version": "pv",
        "decided_at": "2026-01-01T00:00:00.000Z",
        "latency_ms": 12.346,
    }


def test_dead_letter_is_truncated_and_locatable() -> None:
    raw = b"\xff" + b"a" * 5000
    record = orjson.loads(
        encode_dead_letter(Invalid(r.NOT_UTF8, "byte 0"), raw, topic="posts", partition=2, offset=99)
    )
    assert record["error"] == r.NOT_UTF8
    assert (record["topic"], record["partition"], record["offset"]) == ("posts", 2, 99)
    assert record["raw_bytes"] == len(raw)
    assert len(record["raw"].encode()) <= r.DLQ_RAW_BYTES * 3  # replacement chars may widen it
    assert record["at"].endswith("Z")
