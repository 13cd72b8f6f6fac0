"""Wire records: decoding and validating posts, encoding decisions and dead letters.

Pure functions over bytes and dicts (orjson), so the whole contract is
testable without a broker. Nothing from a post is ever evaluated or used as a
path; the text is only handed to the tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from feedwarden import times
from feedwarden.policy import Decision

MAX_TEXT_CHARS = 50_000
MAX_ID_CHARS = 512
MAX_PAYLOAD_BYTES = 1 << 20
DLQ_RAW_BYTES = 1024
OPTIONAL_STRINGS = ("platform", "author_id", "created_at", "lang")

# Dead-letter error codes: one per way a payload can be wrong.
EMPTY = "empty_payload"
TOO_LARGE = "payload_too_large"
NOT_UTF8 = "invalid_utf8"
NOT_JSON = "invalid_json"
NOT_OBJECT = "not_an_object"
MISSING_ID = "missing_id"
BAD_ID = "invalid_id"
MISSING_TEXT = "missing_text"
BAD_TEXT = "invalid_text"
TEXT_TOO_LONG = "text_too_long"
BAD_FIELD = "invalid_field"
# Set by the moderator, not by decode_post: a text the tokenizer refuses is
# dead-lettered alone instead of failing its whole batch.
UNTOKENIZABLE = "untokenizable_text"
ERROR_CODES = (
    EMPTY, TOO_LARGE, NOT_UTF8, NOT_JSON, NOT_OBJECT, MISSING_ID, BAD_ID,
    MISSING_TEXT, BAD_TEXT, TEXT_TOO_LONG, BAD_FIELD, UNTOKENIZABLE,
)


@dataclass(frozen=True)
class Post:
    id: str
    text: str
    platform: str | None = None
    author_id: str | None = None
    created_at: str | None = None
    lang: str | None = None


@dataclass(frozen=True)
class Invalid:
    """Why a payload could not become a Post."""

    error: str
    detail: str


def decode_post(raw: bytes | None, *, max_text_chars: int = MAX_TEXT_CHARS) -> Post | Invalid:
    """Turn a message value into a Post, or say exactly why not. Never raises."""
    if not raw:
        return Invalid(EMPTY, "message has no value")
    if len(raw) > MAX_PAYLOAD_BYTES:
        return Invalid(TOO_LARGE, f"{len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Invalid(NOT_UTF8, f"byte {exc.start} is not UTF-8")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Invalid(NOT_JSON, str(exc)[:200])
    if not isinstance(data, dict):
        return Invalid(NOT_OBJECT, f"top-level JSON is {type(data).__name__}, expected object")
    return _validate(data, max_text_chars)


def _validate(data: Mapping[str, Any], max_text_chars: int) -> Post | Invalid:
    if "id" not in data:
        return Invalid(MISSING_ID, "field 'id' is required")
    post_id = data["id"]
    if not isinstance(post_id, str) or not post_id.strip():
        return Invalid(BAD_ID, f"'id' must be a non-empty string, got {_kind(post_id)}")
    if len(post_id) > MAX_ID_CHARS:
        return Invalid(BAD_ID, f"'id' has {len(post_id)} characters, at most {MAX_ID_CHARS}")
    if "text" not in data:
        return Invalid(MISSING_TEXT, "field 'text' is required")
    text = data["text"]
    if not isinstance(text, str):
        return Invalid(BAD_TEXT, f"'text' must be a string, got {_kind(text)}")
    if len(text) > max_text_chars:
        return Invalid(TEXT_TOO_LONG, f"'text' has {len(text)} characters, at most {max_text_chars}")
    optional = {}
    for name in OPTIONAL_STRINGS:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            return Invalid(BAD_FIELD, f"'{name}' must be a string, got {_kind(value)}")
        optional[name] = value
    if optional["created_at"] is not None and not _is_rfc3339(optional["created_at"]):
        return Invalid(BAD_FIELD, "'created_at' is not an RFC 3339 timestamp")
    return Post(id=post_id, text=text, **optional)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_rfc3339(value: str) -> bool:
    try:
        times.parse(value)
    except ValueError:
        return False
    return True


def encode_decision(
    post_id: str,
    decision: Decision,
    *,
    model: Mapping[str, str],
    policy_version: str,
    decided_at: str,
    latency_ms: float,
) -> bytes:
    """The Decision contract of DESIGN.md as JSON bytes."""
    return orjson.dumps(
        {
            "post_id": post_id,
            "action": decision.action,
            "labels": [
                {
                    "label": hit.label,
                    "head": hit.head,
                    "score": hit.score,
                    "threshold": hit.threshold,
                    "action": hit.action,
                }
                for hit in decision.labels
            ],
            "model": dict(model),
            "policy_version": policy_version,
            "decided_at": decided_at,
            "latency_ms": round(latency_ms, 3),
        }
    )


def encode_dead_letter(
    invalid: Invalid, raw: bytes | None, *, topic: str, partition: int, offset: int
) -> bytes:
    """A dead letter keeps enough to find and replay the message, never the full payload."""
    clipped = (raw or b"")[:DLQ_RAW_BYTES]
    return orjson.dumps(
        {
            "error": invalid.error,
            "detail": invalid.detail,
            "raw": clipped.decode("utf-8", errors="replace"),
            "raw_bytes": len(raw or b""),
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "at": times.format_epoch(),
        }
    )
