"""Co-occurrence-aware splitting: iterative stratification over labels and label pairs.

Rare labels and rare label pairs are placed first, each row going to the split
that most lacks them, so every split keeps roughly the whole's co-occurrence
structure. `divergence` reports how far each split drifted from the whole.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def _keys(labels: frozenset[str]) -> set[str]:
    ordered = sorted(labels)
    pairs = {f"{a}+{b}" for a, b in itertools.combinations(ordered, 2)}
    return set(ordered) | pairs | ({"<none>"} if not ordered else set())


def cooccurrence_split(
    rows: Sequence[T],
    labels_of: Callable[[T], frozenset[str]],
    fractions: Mapping[str, float],
    seed: int,
) -> dict[str, list[T]]:
    """Split `rows` into named parts of the given fractions, stratified on labels and pairs."""
    rng = random.Random(seed)
    names = list(fractions)
    total = sum(fractions.values())
    share = {name: fractions[name] / total for name in names}
    keys = [_keys(labels_of(row)) for row in rows]
    key_count = Counter(k for ks in keys for k in ks)
    want_rows = {name: share[name] * len(rows) for name in names}
    want_key = {name: {k: share[name] * c for k, c in key_count.items()} for name in names}
    order = list(range(len(rows)))
    rng.shuffle(order)
    order.sort(key=lambda i: min(key_count[k] for k in keys[i]))
    parts: dict[str, list[T]] = {name: [] for name in names}
    for i in order:
        rarest = min(keys[i], key=lambda k: (key_count[k], k))
        best = max(names, key=lambda n: (want_key[n][rarest], want_rows[n], rng.random()))
        parts[best].append(rows[i])
        want_rows[best] -= 1
        for k in keys[i]:
            want_key[best][k] -= 1
    return parts


def divergence(
    whole: Sequence[T], parts: Mapping[str, Sequence[T]], labels_of: Callable[[T], frozenset[str]]
) -> dict[str, dict[str, float]]:
    """Per part: the largest absolute gap in label and label-pair prevalence from the whole,
    and the KL divergence of the part's label distribution from the whole's."""

    def prevalence(rows: Sequence[T]) -> Counter[str]:
        counts = Counter(k for row in rows for k in _keys(labels_of(row)))
        return Counter({k: v / max(1, len(rows)) for k, v in counts.items()})

    base = prevalence(whole)
    report = {}
    for name, rows in parts.items():
        prev = prevalence(rows)
        singles = [k for k in base if "+" not in k]
        pairs = [k for k in base if "+" in k]
        report[name] = {
            "rows": float(len(rows)),
            "max_label_gap": max((abs(prev[k] - base[k]) for k in singles), default=0.0),
            "max_pair_gap": max((abs(prev[k] - base[k]) for k in pairs), default=0.0),
            "label_kl": _kl(prev, base, singles),
        }
    return report


def _kl(p: Mapping[str, float], q: Mapping[str, float], keys: Sequence[str]) -> float:
    eps = 1e-6
    p_total = sum(p.get(k, 0.0) for k in keys) or 1.0
    q_total = sum(q.get(k, 0.0) for k in keys) or 1.0
    value = 0.0
    for k in keys:
        pk = p.get(k, 0.0) / p_total
        qk = q.get(k, 0.0) / q_total
        if pk > 0:
            value += pk * math.log((pk + eps) / (qk + eps))
    return value
