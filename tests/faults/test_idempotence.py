"""Decisions are idempotent: the same post and the same bundle give the same decision bytes,
whatever batch the post lands in (a redelivery after a crash lands in another batch).

Only `decided_at` and `latency_ms` may differ. The released bundle's graph is
dynamically int8-quantized (one activation scale per batch tensor), so the
engine scores such graphs one post at a time; this test holds it to that.
"""

from __future__ import annotations

import random

import orjson
import pytest

from feedwarden.models.bundle import Bundle
from feedwarden.models.engine import Engine
from feedwarden.policy.rules import Policy
from feedwarden.stream.samples import numbered_posts
from feedwarden.stream.settings import Topics
from feedwarden.stream.topology import Incoming, Moderator, Scorer
from tests.faults.support import blank

pytestmark = pytest.mark.faults

POSTS = 96


def _decisions(moderator: Moderator, batch: list[bytes]) -> dict[str, bytes]:
    report = moderator.moderate_batch([Incoming(p, "posts", 0, i, None) for i, p in enumerate(batch)])
    return {o.key.decode(): blank(o.value) for o in report.outgoing if o.topic == moderator.topics.decisions}


def _scorer(bundle: Bundle, graph_batch: int) -> Scorer:
    engine = Engine(bundle, batch_size=graph_batch, providers="cpu")
    return Scorer(engine, Policy.from_file(bundle.policy_path))


@pytest.mark.parametrize("which", ["released", "tiny"])
def test_a_post_gets_the_same_decision_bytes_in_any_batch(
    which: str, released_bundle: Bundle, tiny_bundle: Bundle
) -> None:
    bundle = released_bundle if which == "released" else tiny_bundle
    posts = [orjson.dumps(p) for p in numbered_posts(POSTS, prefix="idem-")]
    posts.append(orjson.dumps({"id": "idem-long", "text": "free crypto giveaway " * 400}))  # pads the batch
    first = Moderator(_scorer(bundle, graph_batch=64), Topics(), max_text_chars=50_000)
    again = Moderator(_scorer(bundle, graph_batch=7), Topics(), max_text_chars=50_000)
    reference = _decisions(first, posts)
    shuffled = posts[:]
    random.Random(7).shuffle(shuffled)
    redelivered: dict[str, bytes] = {}
    for start, size in ((0, 1), (1, 5), (6, 30), (36, len(shuffled))):
        redelivered |= _decisions(again, shuffled[start : start + size])
    assert redelivered.keys() == reference.keys()
    differing = [pid for pid in reference if redelivered[pid] != reference[pid]]
    assert not differing, f"{len(differing)} posts decided differently in another batch, e.g. {differing[:3]}"
