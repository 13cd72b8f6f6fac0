"""Deobfuscation before tokenization: obfuscated spellings read as words, plain text untouched."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from feedwarden.models.bundle import Bundle
from feedwarden.models.normalize import Deobfuscator


@pytest.fixture(scope="module")
def deobfuscate(released_bundle: Bundle) -> Deobfuscator:
    return Deobfuscator(Tokenizer.from_file(str(released_bundle.tokenizer_path)))


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("these 1llegal 1nvaders, s3nd them b4ck", "these illegal invaders, send them back"),
        ("such a f*cking 1d10t, go d!e", "such a f*cking idiot, go die"),
        ("women are s t u p i d, shut up b i t c h", "women are stupid, shut up bitch"),
        ("I h a t e them all", "I hate them all"),  # a one-letter word opening the run
        ("𝗙𝗥𝗘𝗘 𝗖𝗥𝗬𝗣𝗧𝗢 fr33 cl41m", "FREE CRYPTO free claim"),
        ("free\u200bcrypto gi\u200bveaway", "freecrypto giveaway"),
    ],
)
def test_obfuscated_spellings_read_as_words(deobfuscate: Deobfuscator, text: str, read: str) -> None:
    assert deobfuscate(text) == read


@pytest.mark.parametrize(
    "text",
    [
        "Send 0.1 ETH to get $2M back, $ETH and $PEPE pumping, 24h only, code SAVE50",
        "the 1st of May, v2 shipped, @us3r #h8 0x1a3b4c",
        "3x returns, 50x leverage, L1 and L2, V3 pools, Q1 results, 5M users, web3, 1inch, 4claw",
        "v3rmin",  # "vermin" is two pieces to this vocabulary: not enough of a gain to rewrite
        "RapeFugee!!!Past, TRUE!!I said",
        "facepalm 🤦🏾\u200d♀️",  # the zero-width joiner holds the emoji sequence together
        "I am a U S citizen",  # three spaced letters are an abbreviation more often than a disguise
        "k i t e s",  # joined, not a whole word of the vocabulary
        "Made pancakes with my kids this morning. Perfect Sunday!",
    ],
)
def test_numbers_tags_tickers_and_plain_text_stay(deobfuscate: Deobfuscator, text: str) -> None:
    assert deobfuscate(text) == text
