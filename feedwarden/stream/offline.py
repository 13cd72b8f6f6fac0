"""Offline scoring: a JSONL file of posts in, one JSON line per input line out.

The same decoding, engine and policy as the worker, so a file scored here
gets the decisions the stream would give it. A bad line yields an error
line and scoring continues.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, BinaryIO

import orjson

from feedwarden.stream.records import Invalid, Post, decode_post
from feedwarden.stream.topology import Scorer


def score_lines(
    lines: Iterable[bytes], scorer: Scorer, *, max_text_chars: int, chunk_size: int = 512
) -> Iterator[dict[str, Any]]:
    """Results in input order; line numbers start at 1."""
    numbered = enumerate(lines, start=1)
    while chunk := list(islice(numbered, chunk_size)):
        results: list[Post | Invalid] = [
            decode_post(raw.rstrip(b"\r\n"), max_text_chars=max_text_chars) for _, raw in chunk
        ]
        scored = scorer.decide(results, {})
        row_of = {index: row for row, index in enumerate(scored.decisions)}
        for index, ((number, _), result) in enumerate(zip(chunk, results, strict=True)):
            if isinstance(result, Invalid):
                yield {"line": number, "error": result.error, "detail": result.detail}
                continue
            decision = scored.decisions[index]
            probs = scored.probs[row_of[index]]
            yield {
                "id": result.id,
                "action": decision.action,
                "scores": {label: round(float(p), 6) for label, p in zip(scored.labels, probs, strict=True)},
                "labels": [
                    {"label": h.label, "head": h.head, "score": h.score,
                     "threshold": h.threshold, "action": h.action}
                    for h in decision.labels
                ],
                "model": scorer.model,
                "policy_version": scorer.policy.version,
            }


def score_file(
    source: BinaryIO,
    sink: BinaryIO,
    scorer: Scorer,
    *,
    max_text_chars: int,
    chunk_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Score `source` into `sink`; returns counts of decided posts and error lines."""
    counts = {"lines": 0, "decided": 0, "errors": 0}
    for result in score_lines(source, scorer, max_text_chars=max_text_chars, chunk_size=chunk_size):
        sink.write(orjson.dumps(result) + b"\n")
        counts["lines"] += 1
        counts["errors" if "error" in result else "decided"] += 1
        if progress is not None and counts["lines"] % chunk_size == 0:
            progress(counts["lines"])
    return counts
