"""Sample traffic: the packaged sample posts and one malformed payload per way to be wrong."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from itertools import cycle, islice

import orjson

from feedwarden.stream import records as r


def sample_posts() -> list[dict[str, object]]:
    """The ~60 varied posts of `sample_posts.jsonl` (scams to clean chatter)."""
    text = (importlib.resources.files("feedwarden.stream") / "sample_posts.jsonl").read_text("utf-8")
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def numbered_posts(n: int, *, prefix: str = "") -> Iterator[dict[str, object]]:
    """`n` posts cycling through the samples, each with a unique id."""
    for number, post in enumerate(islice(cycle(sample_posts()), n)):
        yield post | {"id": f"{prefix}{post['id']}-{number:06d}"}


def _malformed_kinds(tag: str) -> list[tuple[str, bytes]]:
    def js(value: object) -> bytes:
        return orjson.dumps(value)

    return [
        (r.EMPTY, b""),
        (r.NOT_UTF8, b'{"id": "' + tag.encode() + b'", "text": "caf\xe9 \xff"}'),
        (r.NOT_JSON, b'{"id": "' + tag.encode() + b'", "text": '),
        (r.NOT_JSON, b"hello, not json " + tag.encode()),
        (r.NOT_OBJECT, js([tag, "a list"])),
        (r.NOT_OBJECT, js(f"just a string {tag}")),
        (r.MISSING_ID, js({"text": f"no id here {tag}"})),
        (r.BAD_ID, js({"id": 12345, "text": tag})),
        (r.BAD_ID, js({"id": "   ", "text": tag})),
        (r.BAD_ID, js({"id": tag + "x" * r.MAX_ID_CHARS, "text": tag})),
        (r.MISSING_TEXT, js({"id": tag})),
        (r.BAD_TEXT, js({"id": tag, "text": None})),
        (r.BAD_TEXT, js({"id": tag, "text": {"nested": True}})),
        (r.TEXT_TOO_LONG, js({"id": tag, "text": "a" * (r.MAX_TEXT_CHARS + 1)})),
        (r.BAD_FIELD, js({"id": tag, "text": "hi", "lang": 7})),
        (r.BAD_FIELD, js({"id": tag, "text": "hi", "created_at": "yesterday"})),
    ]


def malformed_payloads(n: int) -> list[tuple[str, bytes]]:
    """`n` bad payloads, (expected error code, bytes), cycling through every decodable error kind.

    `payload_too_large` is left out: a >1 MiB message exceeds the default
    Kafka request size, so the producer refuses it before any broker sees it.
    """
    out: list[tuple[str, bytes]] = []
    while len(out) < n:
        out.extend(_malformed_kinds(f"bad-{len(out):04d}"))
    return out[:n]
