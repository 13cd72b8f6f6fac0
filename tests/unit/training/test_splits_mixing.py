from __future__ import annotations

import random
from collections import Counter

from feedwarden.training.data import Example
from feedwarden.training.mixing import MixConfig, base_rate_set, clean_bucket, mix, repeat_factors
from feedwarden.training.splits import cooccurrence_split, divergence


def _rows(seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    rows = []
    for i in range(600):
        labels = set()
        if rng.random() < 0.2:
            labels.add("scam")
        if rng.random() < 0.4:
            labels.add("topic_crypto")
        if i % 50 == 0:
            labels |= {"phishing", "scam"}
        rows.append(
            Example(id=str(i), text=f"t{i}", labels=frozenset(labels), source="janitr", split="train")
        )
    return rows


def _labels(row: Example) -> frozenset[str]:
    return row.labels


def test_split_is_seeded_complete_and_keeps_pairs_balanced() -> None:
    rows = _rows()
    parts = cooccurrence_split(rows, _labels, {"train": 0.7, "calib": 0.3}, seed=3)
    again = cooccurrence_split(rows, _labels, {"train": 0.7, "calib": 0.3}, seed=3)
    assert [r.id for r in parts["train"]] == [r.id for r in again["train"]]
    assert sorted(r.id for p in parts.values() for r in p) == sorted(r.id for r in rows)
    assert abs(len(parts["calib"]) - 180) <= 2
    pairs = Counter(r.id for r in parts["calib"] if {"phishing", "scam"} <= r.labels)
    assert len(pairs) in (3, 4)  # 12 phishing+scam rows, 30% of them
    report = divergence(rows, parts, _labels)
    assert report["calib"]["max_label_gap"] < 0.02
    assert report["calib"]["max_pair_gap"] < 0.02


def test_repeat_factors_apply_floor_and_cap() -> None:
    rows = [Example(str(i), "t", frozenset({"a"}), "janitr", "train") for i in range(10)]
    rows += [Example(f"b{i}", "t", frozenset({"b"}), "janitr", "train") for i in range(200)]
    rows += [Example("ab", "t", frozenset({"a", "b"}), "janitr", "train")]
    factors = repeat_factors(rows, lambda r: set(r.labels), floor=33, cap=100)
    assert factors[0] == 3.0  # 11 "a" rows -> 33
    assert factors[10] == 100 / 201  # capped
    assert factors[-1] == 3.0  # a rare label wins


def test_mix_is_seeded_and_clean_bucket_has_hard_negatives() -> None:
    rows = _rows()
    hard = [Example(f"h{i}", "t", frozenset(), "tweeteval_hate", "train") for i in range(100)]
    config = MixConfig(floor=50, cap=150, clean_rows=80, hard_negative_share=0.25, obfuscated_share=0.0)
    first = mix(rows + hard, lambda r: set(r.labels), config, seed=1)
    assert [r.id for r in first] == [r.id for r in mix(rows + hard, lambda r: set(r.labels), config, seed=1)]
    clean = [r for r in first if not r.labels]
    assert len(clean) == 80
    assert sum(r.source == "tweeteval_hate" for r in clean) == 20
    bucket = clean_bucket(hard, 30, 0.5, random.Random(0))  # no easy pool: all hard
    assert len(bucket) == 30


def test_base_rate_set_reaches_the_clean_share() -> None:
    labelled = [
        Example(str(i), "t", frozenset({"scam"} if i < 10 else set()), "janitr", "calib") for i in range(30)
    ]
    pool = [Example(f"p{i}", "t", frozenset(), "presumed_clean", "calib") for i in range(500)]
    chosen = base_rate_set(labelled, pool, lambda r: "scam" in r.labels, clean_share=0.95, seed=0)
    positives = sum("scam" in r.labels for r in chosen)
    assert positives == 10 and len(chosen) == 200


def test_obfuscated_copies_come_from_abuse_sources_only_and_keep_labels() -> None:
    from feedwarden.training.mixing import obfuscate, obfuscated_copies

    rows = [
        Example(f"h{i}", "these people are terrible humans", frozenset({"hate"}), "tweeteval_hate", "train")
        for i in range(20)
    ]
    rows += [
        Example(f"j{i}", "claim your airdrop today", frozenset({"scam"}), "janitr", "train")
        for i in range(20)
    ]
    copies = obfuscated_copies(rows, 0.5, random.Random(0))
    assert len(copies) == 10
    assert all(
        c.source == "tweeteval_hate" and c.labels == {"hate"} and c.id.endswith(":obfuscated") for c in copies
    )
    assert obfuscate("nothing", random.Random(0)) in {
        "nothing",
        "n0thing",
        "n o t h i n g",
        "n*thing",
        "noth*ng",
    }


def test_target_swapped_copies_name_another_group_and_keep_labels() -> None:
    from feedwarden.training.mixing import GROUP_NOUN, TARGET_GROUPS, swap_target, target_swapped_copies

    rows = [
        Example(f"h{i}", "Send the illegals home, women too", frozenset({"hate"}), "tweeteval_hate", "train")
        for i in range(10)
    ]
    rows += [
        Example(f"n{i}", "refugees welcome here", frozenset(), "tweeteval_hate", "train") for i in range(10)
    ]
    rows += [Example("x", "nobody named", frozenset({"hate"}), "tweeteval_hate", "train")]
    rows += [Example("j", "women in crypto meetup", frozenset({"topic_crypto"}), "janitr", "train")]
    copies = target_swapped_copies(rows, 0.5, random.Random(0))
    assert len(copies) == 10 and all(c.id.endswith(":target") for c in copies)
    by_id = {r.id: r for r in rows}
    for copy in copies:
        original = by_id[copy.id.removesuffix(":target")]
        assert (copy.labels, copy.source) == (original.labels, original.source)
        named = {m.lower() for m in GROUP_NOUN.findall(original.text)}
        [group] = [g for g in TARGET_GROUPS if copy.text == GROUP_NOUN.sub(g, original.text)]
        assert group.lower() not in named
    assert swap_target("nobody named", random.Random(0)) == "nobody named"
