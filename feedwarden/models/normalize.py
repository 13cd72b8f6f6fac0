"""Undo common obfuscated spellings before tokenization, judged by the model's own vocabulary.

Abuse and spam are written to slip past filters: leetspeak ("v3rmin",
"1d10t"), spaced letters ("s t u p i d"), styled Unicode ("𝗙𝗥𝗘𝗘"),
zero-width characters inside words. The encoder's WordPiece vocabulary
shreds such spellings into pieces it never saw in that role, so the heads
see noise where a reader sees the word.

`Deobfuscator` rewrites a spelling only when the rewrite is more word-like to
the model: a leet token is replaced by its letter reading when that reading is
all letters and tokenizes into at most half as many pieces (so "b4ck" and
"1d10t" become "back" and "idiot", while "3x", "4claw", "web3", "$2M" or the
cashtag "$ETH" stay; "v3rmin" stays too, "vermin" being two pieces), and a run
of four or more spaced single letters is joined when the joined word is a whole
word of the vocabulary, also after a leading "I" or "a" ("I h a t e" reads "I hate";
"U S A" stays). NFKC folds styled and full-width
letters and digits into plain ones (punctuation and symbols keep their form);
zero-width characters are dropped. Plain text passes through unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from tokenizers import Encoding, Tokenizer

_LETTER_OF = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)
_LEET_CHARS = frozenset("013457@$!")
# A space-delimited token holding a leet character: the only tokens `_word` may rewrite.
_LEET_TOKEN = re.compile("[^ ]*[013457@$!][^ ]*")
# Zero-width space, word joiner, invisible operators, BOM, soft hyphen; not the
# zero-width (non-)joiners, which hold emoji sequences and some scripts together.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b\u2060-\u2064\ufeff]")
_SPACED = re.compile(r"(?<![^\W\d_])(?:[^\W\d_] ){3,}[^\W\d_](?![^\W\d_])")
_EDGE_PUNCTUATION = ".,;:?!\"'()[]{}…"
_ONE_LETTER_WORDS = frozenset("IaA")


class Deobfuscator:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.vocab = frozenset(tokenizer.get_vocab())

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Token encodings of `texts` as the model reads them: the one way serving and training
        turn posts into encodings."""
        return self.tokenizer.encode_batch([self(text) for text in texts])

    def __call__(self, text: str) -> str:
        text = _INVISIBLE.sub("", _fold_letters(text))
        text = _SPACED.sub(self._joined, text)
        return _LEET_TOKEN.sub(self._word_of, text)

    def _word_of(self, match: re.Match[str]) -> str:
        return self._word(match.group(0))

    def _joined(self, match: re.Match[str]) -> str:
        letters = match.group(0).split(" ")
        word = "".join(letters)
        if word.lower() in self.vocab:
            return word
        # The run may begin with the word "I" or "a": "I h a t e you", "a b i t c h".
        rest = "".join(letters[1:])
        if letters[0] in _ONE_LETTER_WORDS and len(rest) >= 4 and rest.lower() in self.vocab:
            return f"{letters[0]} {rest}"
        return match.group(0)

    def _word(self, token: str) -> str:
        core = token.strip(_EDGE_PUNCTUATION)
        if not _is_leet_candidate(core):
            return token
        plain = core.translate(_LETTER_OF)
        if not plain.isalpha() or 2 * self._pieces(plain) > self._pieces(core):
            return token
        start = token.index(core)
        return token[:start] + plain + token[start + len(core):]

    def _pieces(self, word: str) -> int:
        return len(self.tokenizer.encode(word, add_special_tokens=False).ids)


def _fold_letters(text: str) -> str:
    """NFKC for letters and digits only: styled, full-width and ligature forms become plain,
    while punctuation and symbols ("…", "？", "™") keep the form the model was trained on.
    An NFKC-normal text has no letter or digit to fold (every one of the 3,727 that NFKC
    changes makes its text non-normal), so most posts with emoji skip the per-character pass."""
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return text
    return "".join(
        unicodedata.normalize("NFKC", c) if unicodedata.category(c)[0] in "LN" else c for c in text
    )


def _is_leet_candidate(core: str) -> bool:
    """A word of two or more letters mixed with leet characters; not a mention, hashtag,
    cashtag, link, address or shout ("3x", "L1", "5M" or "b4" have one letter, "TRUE!!I" is
    punctuation: left alone)."""
    if core[:1] in ("@", "#", "$") or core.lower().startswith("0x"):
        return False
    if any(mark in core for mark in ("/", ".", "!!")):
        return False
    return sum(c.isalpha() for c in core) >= 2 and any(c in _LEET_CHARS for c in core)
