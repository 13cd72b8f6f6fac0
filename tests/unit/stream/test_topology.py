"""The pure batch topology: routing, keys, dead letters and never raising on input."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwarden.models.bundle import Bundle
from feedwarden.stream import records as r
from feedwarden.stream.samples import malformed_payloads
from feedwarden.stream.settings import Topics
from feedwarden.stream.topology import Incoming, Moderator, Scorer

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def moderator(tiny_bundle: Bundle) -> Moderator:
    scorer = Scorer.from_bundle(tiny_bundle.path, providers="cpu")
    return Moderator(scorer, Topics(), max_text_chars=r.MAX_TEXT_CHARS, clock=lambda: NOW)


def message(value: bytes | None, offset: int = 0) -> Incoming:
    return Incoming(value, "posts", 1, offset, timestamp=NOW - 0.25)


def post(post_id: str, text: str) -> bytes:
    return orjson.dumps({"id": post_id, "text": text})


def test_each_action_routes_to_decisions_and_its_own_topic(moderator: Moderator) -> None:
    batch = [
        message(post("h", "free scam"), 0),
        message(post("w", "you idiot idiot"), 1),
        message(post("b", "crypto talk"), 2),
        message(post("a", "hello world"), 3),
    ]
    report = moderator.moderate_batch(batch)
    routed = [(o.topic, o.key) for o in report.outgoing]
    assert routed == [
        ("decisions", b"h"),
        ("decisions.hide", b"h"),
        ("decisions", b"w"),
        ("decisions.warn", b"w"),
        ("decisions", b"b"),
        ("decisions.badge", b"b"),
        ("decisions", b"a"),
    ]
    assert [d.decision.action for d in report.decided] == ["hide", "warn", "badge", "allow"]
    assert report.scores.shape == (4, len(report.labels))
    assert report.dead_letters == []


def test_decision_value_is_the_contract(moderator: Moderator) -> None:
    report = moderator.moderate_batch([message(post("p1", "free scam"))])
    record = orjson.loads(report.outgoing[0].value)
    assert set(record) == {
        "post_id",
        "action",
        "labels",
        "model",
        "policy_version",
        "decided_at",
        "latency_ms",
    }
    assert record["post_id"] == "p1" and record["action"] == "hide"
    assert record["model"] == {"safety": "tiny-1", "topic": "tiny-1"}
    assert record["policy_version"] == "tiny-policy-1"
    assert record["latency_ms"] == 250.0
    assert [h["label"] for h in record["labels"]] == ["scam"]
    assert record["labels"][0] == {
        "label": "scam",
        "head": "safety",
        "score": 1.0,  # 0.99967 reported to 3 decimals
        "threshold": 0.9,
        "action": "hide",
    }


def test_invalid_payloads_become_dead_letters_in_place(moderator: Moderator) -> None:
    bad = malformed_payloads(16)
    batch = [message(post("ok-1", "hello"), 0)] + [message(raw, i + 1) for i, (_, raw) in enumerate(bad)]
    batch.append(message(post("ok-2", "hello"), 99))
    report = moderator.moderate_batch(batch)
    assert report.dead_letters == [code for code, _ in bad]
    assert [o.topic for o in report.outgoing] == ["decisions"] + ["posts.dlq"] * 16 + ["decisions"]
    letters = [orjson.loads(o.value) for o in report.outgoing if o.topic == "posts.dlq"]
    assert [(d["topic"], d["partition"], d["offset"]) for d in letters] == [
        ("posts", 1, i + 1) for i in range(16)
    ]
    assert report.outgoing[1].key == b"posts/1/1"
    assert [d.post_id for d in report.decided] == ["ok-1", "ok-2"]


def test_all_invalid_batch_skips_the_model(moderator: Moderator) -> None:
    report = moderator.moderate_batch([message(b"nope"), message(None, 1)])
    assert report.dead_letters == [r.NOT_JSON, r.EMPTY]
    assert "infer" not in report.stage_seconds
    assert report.decided == []


def test_stage_timings_are_reported(moderator: Moderator) -> None:
    report = moderator.moderate_batch([message(post("p", "hello"))])
    assert set(report.stage_seconds) == {"decode", "tokenize", "infer", "policy", "produce"}
    assert all(seconds >= 0 for seconds in report.stage_seconds.values())


def test_missing_timestamp_gives_zero_latency(moderator: Moderator) -> None:
    report = moderator.moderate_batch([Incoming(post("p", "hello"), "posts", 0, 0, timestamp=None)])
    assert orjson.loads(report.outgoing[0].value)["latency_ms"] == 0.0


def test_a_text_the_tokenizer_refuses_is_dead_lettered_alone(moderator: Moderator, monkeypatch) -> None:
    engine = moderator.scorer.engine
    real = engine.tokenize

    def picky(texts):  # type: ignore[no-untyped-def]
        if any("poison" in t for t in texts):
            raise RuntimeError("boom")
        return real(texts)

    monkeypatch.setattr(engine, "tokenize", picky)
    report = moderator.moderate_batch([message(post("a", "hello"), 0), message(post("b", "poison"), 1)])
    assert report.dead_letters == [r.UNTOKENIZABLE]
    assert [d.post_id for d in report.decided] == ["a"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.binary(max_size=80) | st.builds(post, st.text(min_size=1, max_size=8), st.text(max_size=40)),
        max_size=12,
    )
)
def test_any_batch_yields_one_outcome_per_message(moderator: Moderator, values: list[bytes]) -> None:
    report = moderator.moderate_batch([message(v, i) for i, v in enumerate(values)])
    assert len(report.decided) + len(report.dead_letters) == len(values)
    assert set(report.dead_letters) <= set(r.ERROR_CODES)
    assert sum(o.topic == "decisions" for o in report.outgoing) == len(report.decided)
