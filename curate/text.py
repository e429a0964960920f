"""Cheap text primitives shared by the filters and dedup: one word split, one normalisation.

Words are whitespace-separated tokens with punctuation stripped from both ends (``"(hello,"`` →
``"hello"``); tokens made only of punctuation are symbols, not words. This is what the Gopher
paper's rules count ("words" of a whitespace split) and costs one ``str.split`` plus one
``str.strip`` per token — no tokenizer model (spaCy-based splitting is ~400× slower).
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass

# ASCII punctuation plus the common Unicode quotes, dashes, brackets and CJK punctuation.
PUNCTUATION = (
    string.punctuation
    + "«»‹›“”„‟‘’‚‛–—―…·•►◄■□▪▫●○◆◇★☆、。，．：；！？（）【】「」『』〈〉《》〔〕～％＃＆＊＋＝"
)
_PUNCT_TRANS = str.maketrans(PUNCTUATION, " " * len(PUNCTUATION))
# A whitespace token without any letter (digits, symbols): counted by one regex pass.
_NON_ALPHA_TOKEN = re.compile(r"(?<!\S)(?:[^\s\w]|[\d_])+(?!\S)")


@dataclass(frozen=True)
class Tokens:
    """The one split of a document that every word-based rule reads."""

    tokens: list[str]  # whitespace tokens, lower-cased
    words: list[str]  # tokens with punctuation stripped from both ends, empty ones dropped
    non_alpha_tokens: int  # tokens with no letter at all


def split_words(text: str) -> Tokens:
    """Lower-case ``text`` and split it once into tokens and words (see module doc)."""
    low = text.lower()
    tokens = low.split()
    strip = PUNCTUATION
    words = [w for w in (t.strip(strip) for t in tokens) if w]
    return Tokens(tokens, words, len(_NON_ALPHA_TOKEN.findall(low)))


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (punctuation stripped from token ends)."""
    return split_words(text).words


def normalize(text: str) -> str:
    """NFKC, lower-case, punctuation → space, whitespace collapsed: the form dedup compares."""
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.lower().translate(_PUNCT_TRANS).split())
