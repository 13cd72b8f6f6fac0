"""Mixing: label-occurrence balanced training mixes and realistic base-rate eval sets.

Each row with a positive head label is repeated (or dropped) so that every
label's occurrence count moves toward [floor, cap]; rows without positives form
the clean bucket, a set share of which are hard negatives (clean rows that look
like positives: crypto posts without a scam, heated tweets without hate).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from feedwarden.training.data import Example

HARD_NEGATIVE_TOPICS = frozenset({"topic_crypto", "topic_finance"})
LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "$", "t": "7"})
# The abuse datasets: their clean rows are hard negatives, and their rows (either class) get
# obfuscated copies.
ABUSE_SOURCES = frozenset({"tweeteval_hate", "tweeteval_offensive", "davidson"})
# Target groups, as plural nouns. The abuse data is nearly all about immigrants and women
# (TweetEval hate train: 2,500 and 2,400 rows mention them; disabled, gay or trans people
# under 30 each); functional tests of hate speech target all of these.
TARGET_GROUPS = (
    "immigrants", "refugees", "women", "Muslims", "Jews", "Black people", "gay people",
    "trans people", "disabled people",
)
GROUP_NOUN = re.compile(r"\b(immigrants|migrants|refugees|illegals|women|muslims|jews|blacks|gays)\b", re.I)


@dataclass(frozen=True)
class MixConfig:
    floor: int = 60
    cap: int = 2500
    clean_rows: int = 4000
    hard_negative_share: float = 0.5
    # Share of abuse-source rows (positive and negative alike, so obfuscation itself
    # is no signal) added again in an obfuscated spelling: leet, spaced, starred.
    obfuscated_share: float = 0.0
    # Share of abuse-source rows naming a target group (either class, so a group's name
    # itself is no signal) added again with another group named: what is said about one
    # group is hate about any.
    target_swap_share: float = 0.0


def is_hard_negative(row: Example) -> bool:
    return row.source in ABUSE_SOURCES or bool(row.labels & HARD_NEGATIVE_TOPICS)


def repeat_factors(
    rows: Sequence[Example], positives: Callable[[Example], set[str]], floor: int, cap: int
) -> list[float]:
    """Per positive row: the largest, over its labels, of target/actual occurrence,
    target being the label's count clamped to [floor, cap]."""
    counts = Counter(label for row in rows for label in positives(row))
    factors = []
    for row in rows:
        ratios = [min(max(counts[lab], floor), cap) / counts[lab] for lab in positives(row)]
        factors.append(max(ratios))
    return factors


def _stochastic_copies(factor: float, rng: random.Random) -> int:
    whole = math.floor(factor)
    return whole + (rng.random() < factor - whole)


def mix(
    rows: Sequence[Example],
    positives: Callable[[Example], set[str]],
    config: MixConfig,
    seed: int,
) -> list[Example]:
    """A shuffled training mix: balanced positives plus a clean bucket with hard negatives."""
    rng = random.Random(seed)
    positive_rows = [row for row in rows if positives(row)]
    clean = [row for row in rows if not positives(row)]
    factors = repeat_factors(positive_rows, positives, config.floor, config.cap)
    mixed: list[Example] = []
    for row, factor in zip(positive_rows, factors, strict=True):
        mixed.extend([row] * _stochastic_copies(factor, rng))
    mixed.extend(clean_bucket(clean, config.clean_rows, config.hard_negative_share, rng))
    mixed.extend(obfuscated_copies(mixed, config.obfuscated_share, rng))
    mixed.extend(target_swapped_copies(mixed, config.target_swap_share, rng))
    rng.shuffle(mixed)
    return mixed


def clean_bucket(clean: Sequence[Example], size: int, hard_share: float, rng: random.Random) -> list[Example]:
    """`size` clean rows, `hard_share` of them hard negatives (as far as the pools allow)."""
    hard = [row for row in clean if is_hard_negative(row)]
    easy = [row for row in clean if not is_hard_negative(row)]
    n_hard = min(len(hard), round(size * hard_share))
    n_easy = min(len(easy), size - n_hard)
    n_hard = min(len(hard), size - n_easy)
    return rng.sample(hard, n_hard) + rng.sample(easy, n_easy)


def base_rate_set(
    labelled: Sequence[Example],
    presumed_clean: Sequence[Example],
    is_positive: Callable[[Example], bool],
    clean_share: float,
    seed: int,
) -> list[Example]:
    """An evaluation set where `clean_share` of rows have no safety positive.

    Positives come from `labelled`; clean rows from `labelled` first, then from
    `presumed_clean` (rows of other sources taken as negatives)."""
    if not 0.0 < clean_share < 1.0:
        raise ValueError(f"clean_share {clean_share} not in (0, 1)")
    rng = random.Random(seed)
    positive = [row for row in labelled if is_positive(row)]
    clean = [row for row in labelled if not is_positive(row)]
    wanted_clean = round(len(positive) * clean_share / (1.0 - clean_share))
    extra = max(0, wanted_clean - len(clean))
    if extra > len(presumed_clean):
        keep = round(len(clean + list(presumed_clean)) * (1.0 - clean_share) / clean_share)
        positive = rng.sample(positive, min(len(positive), keep))
        extra = len(presumed_clean)
    chosen = positive + clean + rng.sample(list(presumed_clean), extra)
    rng.shuffle(chosen)
    return chosen


def obfuscate(text: str, rng: random.Random) -> str:
    """One obfuscated spelling of `text`: leetspeak, letter spacing or starred vowels,
    applied to about half of its longer words."""
    style = rng.choice(("leet", "spaced", "starred"))
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) < 4 or not word.isalpha() or rng.random() < 0.5:
            continue
        if style == "leet":
            words[i] = word.lower().translate(LEET)
        elif style == "spaced":
            words[i] = " ".join(word)
        else:
            vowels = [j for j, ch in enumerate(word) if ch.lower() in "aeiou"]
            if vowels:
                j = rng.choice(vowels)
                words[i] = word[:j] + "*" + word[j + 1 :]
    return " ".join(words)


def obfuscated_copies(rows: Sequence[Example], share: float, rng: random.Random) -> list[Example]:
    """Obfuscated copies of `share` of the rows from abuse sources."""
    eligible = [row for row in rows if row.source in ABUSE_SOURCES]
    chosen = rng.sample(eligible, round(len(eligible) * share)) if share > 0 else []
    return [replace(row, id=f"{row.id}:obfuscated", text=obfuscate(row.text, rng)) for row in chosen]


def swap_target(text: str, rng: random.Random) -> str:
    """`text` with every target-group noun replaced by one other group (unchanged without one)."""
    named = {match.lower() for match in GROUP_NOUN.findall(text)}
    other = rng.choice([group for group in TARGET_GROUPS if group.lower() not in named])
    return GROUP_NOUN.sub(other, text)


def target_swapped_copies(rows: Sequence[Example], share: float, rng: random.Random) -> list[Example]:
    """Copies of `share` of the abuse-source rows that name a target group, with another group."""
    eligible = [row for row in rows if row.source in ABUSE_SOURCES and GROUP_NOUN.search(row.text)]
    chosen = rng.sample(eligible, round(len(eligible) * share)) if share > 0 else []
    return [replace(row, id=f"{row.id}:target", text=swap_target(row.text, rng)) for row in chosen]
