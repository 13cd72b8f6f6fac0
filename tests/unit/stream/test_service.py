"""The agent's I/O half without a broker: acks awaited, failures re-sent, metrics, offline scoring."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import generate_latest

from feedwarden.models.bundle import Bundle
from feedwarden.stream import app as app_module
from feedwarden.stream.app import SCRATCH_PREFIX, ModerationService, RecentIds, _scratch_dir, create_app
from feedwarden.stream.metrics import Metrics
from feedwarden.stream.offline import score_file
from feedwarden.stream.settings import Settings
from feedwarden.stream.topology import BatchReport, Incoming, Moderator, Outgoing, Scorer


@pytest.fixture()
def service(tiny_bundle: Bundle) -> ModerationService:
    return ModerationService(Settings(bundle=tiny_bundle.path, providers="cpu"), Metrics())


def event(value: bytes | None, offset: int) -> Any:
    return SimpleNamespace(
        message=SimpleNamespace(value=value, topic="posts", partition=0, offset=offset, timestamp=1.0)
    )


class FlakySender:
    """Acks records through futures; the first `failures` sends fail with a Kafka timeout."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[Outgoing] = []
        self.acked: list[Outgoing] = []

    async def __call__(self, record: Outgoing) -> asyncio.Future[Any]:
        self.sent.append(record)
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures > 0:
            self.failures -= 1
            ack.set_exception(KafkaTimeoutError())
        else:
            self.acked.append(record)
            ack.set_result(None)
        return ack


def test_batch_returns_only_after_every_record_is_acked(service: ModerationService, monkeypatch) -> None:
    monkeypatch.setattr(app_module, "SEND_RETRY_SECONDS", (0.0,))
    sender = FlakySender(failures=2)
    events = [
        event(orjson.dumps({"id": "p1", "text": "free scam"}), 0),
        event(b"junk", 1),
        event(orjson.dumps({"id": "p2", "text": "hello"}), 2),
    ]
    report = asyncio.run(service.handle(events, sender))
    # p1's two records failed first, so they are acked last, after their re-send.
    assert [(o.topic, o.key) for o in sender.acked] == [
        ("posts.dlq", b"posts/0/1"),
        ("decisions", b"p2"),
        ("decisions", b"p1"),
        ("decisions.hide", b"p1"),
    ]
    assert len(sender.sent) == 6  # two failed sends were retried
    assert sorted(sender.acked, key=repr) == sorted(report.outgoing, key=repr)


def test_unexpected_send_errors_propagate(service: ModerationService) -> None:
    async def broken(record: Outgoing) -> asyncio.Future[Any]:
        raise ValueError("a bug, not a broker problem")

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(service.handle([event(orjson.dumps({"id": "p", "text": "x"}), 0)], broken))


def test_metrics_follow_each_batch(service: ModerationService) -> None:
    events = [
        event(orjson.dumps({"id": "p1", "text": "free scam"}), 0),
        event(b"", 1),
        event(orjson.dumps({"id": "p1", "text": "free scam"}), 2),
    ]
    asyncio.run(service.handle(events, FlakySender()))
    text = generate_latest(service.metrics.registry).decode()
    for line in (
        "feedwarden_posts_total 3.0",
        'feedwarden_decisions_total{action="hide"} 2.0',
        'feedwarden_label_decisions_total{action="hide",label="scam"} 2.0',
        'feedwarden_dead_letters_total{error="empty_payload"} 1.0',
        "feedwarden_duplicate_posts_total 1.0",
        "feedwarden_batch_size_count 1.0",
        'feedwarden_batch_stage_seconds_count{stage="infer"} 1.0',
        "feedwarden_end_to_end_seconds_count 2.0",
        'version="tiny-1"',
    ):
        assert line in text, line


def test_batch_hook_sees_every_report(tiny_bundle: Bundle) -> None:
    seen: list[BatchReport] = []
    deciders: list[Moderator] = []

    async def hook(messages: Sequence[Incoming], report: BatchReport, moderator: Moderator) -> None:
        assert [m.offset for m in messages] == [0]
        seen.append(report)
        deciders.append(moderator)

    service = ModerationService(Settings(bundle=tiny_bundle.path, providers="cpu"), Metrics(), hook)
    asyncio.run(service.handle([event(orjson.dumps({"id": "p", "text": "bitcoin"}), 0)], FlakySender()))
    assert [d.post_id for d in seen[0].decided] == ["p"]
    assert deciders == [service.moderator]
    assert seen[0].scores.shape == (1, len(seen[0].labels))


def test_recent_ids_are_bounded() -> None:
    recent = RecentIds(capacity=2)
    assert [recent.seen_before(i) for i in ("a", "b", "a", "c", "b", "a")] == [
        False,
        False,
        True,
        False,
        False,
        False,
    ]


def test_app_is_not_ready_before_joining_its_group(tiny_bundle: Bundle) -> None:
    app = create_app(Settings(bundle=tiny_bundle.path, providers="cpu", web_port=16099))
    service: ModerationService = app.moderation  # type: ignore[attr-defined]
    assert app.conf.broker_commit_interval == 0.5  # the settings' commit interval, not Faust's 2.8 s
    assert app.conf.producer_linger == 0.005  # the settings' linger, not Faust's 0
    assert not service.ready(app)
    service.joined_group = True
    assert service.ready(app)
    assert "moderate" in {agent.name.rsplit(".", 1)[-1] for agent in app.agents.values()}


def test_offline_scoring_writes_one_line_per_input_line(tiny_bundle: Bundle) -> None:
    scorer = Scorer.from_bundle(tiny_bundle.path, providers="cpu")
    source = io.BytesIO(b'{"id": "a", "text": "free scam"}\nnot json\n\n{"id": "b", "text": "hello"}\r\n')
    sink = io.BytesIO()
    counts = score_file(source, sink, scorer, max_text_chars=100, chunk_size=2)
    lines = [orjson.loads(line) for line in sink.getvalue().splitlines()]
    assert counts == {"lines": 4, "decided": 2, "errors": 2}
    assert [line.get("id") or line["line"] for line in lines] == ["a", 2, 3, "b"]
    assert lines[1]["error"] == "invalid_json" and lines[2]["error"] == "empty_payload"
    first = lines[0]
    assert set(first) == {"id", "action", "scores", "labels", "model", "policy_version"}
    assert first["action"] == "hide" and list(first["scores"]) == list(tiny_bundle.manifest.labels)
    assert [hit["label"] for hit in first["labels"]] == ["scam"]


def test_scratch_dirs_of_workers_that_no_longer_run_are_swept(tmp_path: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    stale = tmp_path / f"{SCRATCH_PREFIX}{ended.pid}-abc"
    (stale / "v1" / "tables").mkdir(parents=True)
    alive = tmp_path / f"{SCRATCH_PREFIX}{os.getppid()}-def"
    alive.mkdir()
    unrelated = tmp_path / f"{SCRATCH_PREFIX}oldstyle"
    unrelated.mkdir()
    ours = Path(_scratch_dir(str(tmp_path)))
    assert not stale.exists(), "a dead worker's dir is removed"
    assert alive.exists() and unrelated.exists(), "a running worker's dir and unattributable dirs stay"
    assert ours.name.startswith(f"{SCRATCH_PREFIX}{os.getpid()}-")
