"""Hot swap and shadow on model.updates, without a broker: good bundles swap, bad ones never do."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from feedwarden.models.bundle import MANIFEST
from feedwarden.models.registry import Promotion, Registry
from feedwarden.models.updates import ModelUpdate
from feedwarden.stream.loop import ModelLoop
from feedwarden.stream.topology import Moderator
from feedwarden.stream.updates import Serving, triage
from tests.unit.stream.loop_support import incoming, make_loop, run_batch, update, write_version


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry")
    write_version(registry.root, "v1")
    write_version(registry.root, "v2")
    registry.promote("v1")
    return registry


def _after_the_fixture() -> str:
    """A shadow announced after the fixture's promotion of v1 (which is stamped now), so not stale."""
    return (datetime.now(UTC) + timedelta(minutes=1)).isoformat()


def _apply(loop: ModelLoop, raw: bytes) -> None:
    asyncio.run(loop.on_update(raw))


def _serving(loop: ModelLoop) -> str:
    return loop.service.moderator.scorer.engine.bundle.version


def _decision_models(loop: ModelLoop) -> set[str]:
    report = run_batch(loop, ["free scam", "hello world"])
    return {version for record in report.outgoing for version in orjson.loads(record.value)["model"].values()}


def _rejected(loop: ModelLoop, reason: str) -> float:
    return float(loop.metrics.bundle_rejected.labels(reason)._value.get())


def test_a_promoted_version_swaps_in_and_decisions_carry_it(registry: Registry) -> None:
    loop, _ = make_loop(registry.root)
    assert _decision_models(loop) == {"v1"}
    registry.promote("v2")
    _apply(loop, update(registry, "v2"))
    assert _serving(loop) == "v2" and _decision_models(loop) == {"v2"}
    assert loop.metrics.bundle_swaps._value.get() == 1
    assert loop.metrics.model_info._value["version"] == "v2"
    assert loop.monitor.plan.version == "v2"


def test_a_tampered_file_is_rejected_and_the_old_bundle_keeps_serving(registry: Registry) -> None:
    loop, _ = make_loop(registry.root)
    registry.promote("v2")
    raw = update(registry, "v2")
    policy = registry.path_of("v2") / "policy.json"
    policy.write_text(policy.read_text().replace("0.9", "0.1"))
    _apply(loop, raw)
    assert _serving(loop) == "v1" and _decision_models(loop) == {"v1"}
    assert _rejected(loop, "digest") == 1 and loop.metrics.bundle_swaps._value.get() == 0


def test_a_manifest_digest_other_than_announced_is_rejected(registry: Registry) -> None:
    loop, _ = make_loop(registry.root)
    registry.promote("v2")
    _apply(loop, update(registry, "v2", manifest_sha256="0" * 64))
    assert _serving(loop) == "v1" and _rejected(loop, "digest") == 1


def test_a_manifest_with_more_labels_than_the_graph_is_rejected(registry: Registry) -> None:
    write_version(registry.root, "v3", extra_label=True)
    registry.promote("v3")
    loop, _ = make_loop(registry.root)
    _apply(loop, update(registry, "v3"))
    assert _serving(loop) == "v1" and _rejected(loop, "labels") == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"not json", "malformed"), (b'{"version": "v9"}', "malformed")],
)
def test_malformed_messages_are_counted_and_skipped(registry: Registry, raw: bytes, reason: str) -> None:
    loop, _ = make_loop(registry.root)
    _apply(loop, raw)
    assert _serving(loop) == "v1" and _rejected(loop, reason) == 1


def test_an_unknown_version_is_rejected(tmp_path: Path, registry: Registry) -> None:
    loop, _ = make_loop(registry.root)
    raw = ModelUpdate("v9", "a" * 64, "promote", "test", "2026-11-22T02:00:00+00:00").encode()
    (registry.root / "history.jsonl").unlink()  # no history: loading decides
    _apply(loop, raw)
    assert _serving(loop) == "v1" and _rejected(loop, "unknown_version") == 1


def test_triage_skips_what_serves_and_what_a_later_promotion_superseded() -> None:
    current = Promotion("v2", "d" * 64, "promote", "", "2026-11-22T02:00:00+00:00")

    def message(version: str, event: str, at: str = "2026-11-22T01:00:00+00:00") -> ModelUpdate:
        return ModelUpdate(version, "d" * 64, event, "", at)

    assert triage(message("v2", "promote"), Serving("v1"), current) is None
    assert "already serving" in str(triage(message("v2", "promote"), Serving("v2"), current))
    assert "superseded" in str(triage(message("v1", "promote"), Serving("v0"), current))  # replayed history
    assert "stale" in str(triage(message("v3", "shadow"), Serving("v2"), current))
    assert triage(message("v3", "shadow", at="2026-11-22T03:00:00+00:00"), Serving("v2"), current) is None
    assert "already the shadow" in str(triage(message("v3", "shadow"), Serving("v2", "v3"), None))
    assert triage(message("v1", "rollback"), Serving("v2"), None) is None


def test_a_batch_in_flight_during_a_swap_is_decided_by_one_bundle(registry: Registry) -> None:
    loop, _ = make_loop(registry.root)
    registry.promote("v2")
    old = loop.service.moderator
    decide = old.moderate_batch

    def swap_midway(messages: list[object]) -> object:
        asyncio.run(loop.on_update(update(registry, "v2")))  # lands while this batch is being decided
        return decide(messages)  # type: ignore[arg-type]

    old.moderate_batch = swap_midway  # type: ignore[method-assign, assignment]
    deciders: list[Moderator] = []

    async def hook(messages: object, report: object, moderator: Moderator) -> None:
        deciders.append(moderator)

    loop.service.on_batch = hook
    events = [type("E", (), {"message": m})() for m in incoming(["free scam"])]
    report = asyncio.run(loop.service.handle(events, _ack))  # type: ignore[arg-type]
    assert {orjson.loads(r.value)["model"]["safety"] for r in report.outgoing} == {"v1"}
    assert deciders == [old] and _serving(loop) == "v2"


async def _ack(record: object) -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def test_shadow_scores_every_batch_and_a_promotion_drops_it(registry: Registry) -> None:
    loop, sent = make_loop(registry.root)
    raw = update(registry, "v2", event="shadow", at=_after_the_fixture())
    _apply(loop, raw)
    assert loop.shadow is not None and loop.shadow.version == "v2" and _serving(loop) == "v1"
    report = run_batch(loop, ["free scam", "hello world", "buy discount"])
    assert {orjson.loads(r.value)["model"]["safety"] for r in report.outgoing} == {"v1"}
    shadow = [orjson.loads(value) for _, value in sent.records["decisions.shadow"]]
    assert [d["post_id"] for d in shadow] == ["p0", "p1", "p2"]
    assert {d["model"]["safety"] for d in shadow} == {"v2"}
    summary = loop.shadow_summary()["shadow"]
    assert summary["posts"] == 3 and summary["action_agreement"] == 1.0
    assert summary["labels"]["scam"] == {"serving_rate": 1 / 3, "shadow_rate": 1 / 3, "difference": 0.0}
    assert loop.metrics.shadow_flag_rate.labels("scam", "shadow")._value.get() == pytest.approx(1 / 3)
    assert loop.metrics.shadow_posts._value.get() == 3
    registry.promote("v2")
    _apply(loop, update(registry, "v2"))
    assert _serving(loop) == "v2" and loop.shadow is None and loop.shadow_summary() == {"shadow": None}


def test_a_tampered_shadow_is_rejected(registry: Registry) -> None:
    loop, _ = make_loop(registry.root)
    raw = update(registry, "v2", event="shadow", at=_after_the_fixture())
    (registry.path_of("v2") / MANIFEST).write_text("{}")
    _apply(loop, raw)
    assert loop.shadow is None and _rejected(loop, "digest") == 1


def test_a_starting_worker_serves_the_registry_current_version_at_once(registry: Registry) -> None:
    registry.promote("v2")
    loop, _ = make_loop(registry.root)  # configured with v1
    loop.serve_registry_current()
    assert _serving(loop) == "v2" and _decision_models(loop) == {"v2"}
    _apply(loop, update(registry, "v2"))  # the replayed announcement is then a no-op
    assert loop.metrics.bundle_swaps._value.get() == 1


def test_a_tampered_registry_current_is_not_served_at_start(registry: Registry) -> None:
    registry.promote("v2")
    policy = registry.path_of("v2") / "policy.json"
    policy.write_text(policy.read_text() + " ")
    loop, _ = make_loop(registry.root)
    loop.serve_registry_current()
    assert _serving(loop) == "v1" and _rejected(loop, "digest") == 1
