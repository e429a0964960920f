"""Words and sentences as the filters' rules count them, per script (one split per document).

Not the dedup split (:mod:`curate.dedup.text`, vectorised over Arrow columns, runs of letters
and digits for hashing): the rules need Gopher's "words of a whitespace split" and the tokens
that are not words.

Words are whitespace-separated tokens with punctuation stripped from both ends (``"(hello,"`` →
``"hello"``); tokens made only of punctuation are symbols, not words. This is what the Gopher
paper's rules count and costs one ``str.split`` plus one ``str.strip`` per token — no tokenizer
model (spaCy-based splitting is ~400× slower). Per script, FineWeb-2 style:

- every character of a script written without spaces (Han, kana, Thai, Lao, Khmer, Myanmar,
  Tibetan) is a word of its own, so a Japanese or Chinese text has words to count (a run of Han
  characters is not one 13k-character "word"); a text without such characters splits exactly
  as before;
- dot leaders (``. . . . .`` or ``.....``, tables of contents) are not tokens at all;
- sentences end at ``. ! ?`` followed by a space or the end (Latin, Cyrillic, Greek, ...), at
  ``؟`` and ``।`` ``॥`` (Arabic, Devanagari) the same way, and at ``。！？`` anywhere (CJK puts
  no space after them).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

# ASCII punctuation plus the common Unicode quotes, dashes, brackets and CJK punctuation.
PUNCTUATION = (
    string.punctuation
    + "«»‹›“”„‟‘’‚‛–—―…·•►◄■□▪▫●○◆◇★☆、。，．：；！？（）【】「」『』〈〉《》〔〕～％＃＆＊＋＝"
    + "،؛؟।॥"
)
# A whitespace token without any letter (digits, symbols): counted by one regex pass.
_NON_ALPHA_TOKEN = re.compile(r"(?<!\S)(?:[^\s\w]|[\d_])+(?!\S)")
UNSPACED_CHAR = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\u0e00-\u0eff\u1780-\u17ff\u1000-\u109f\u0f00-\u0fff]"
)
DOT_LEADER = re.compile(r"[ \t\u00a0]*(?:\.[ \t\u00a0]*){4,}")
SENTENCE_END = re.compile(r"[.!?؟।॥]+[\"')\]]*(?=\s|$)|[。！？]+[」』”’）)]*")
# Line ends that close a sentence in scripts other than Latin (C4's rule knows only . ? ! " ').
NON_LATIN_TERMINAL = ("。", "！", "？", "؟", "।", "॥", "」", "』")


@dataclass(frozen=True)
class Tokens:
    """The one split of a document that every word-based rule reads."""

    tokens: list[str]  # whitespace tokens, lower-cased (unspaced-script characters one each)
    words: list[str]  # tokens with punctuation stripped from both ends, empty ones dropped
    non_alpha_tokens: int  # tokens with no letter at all
    unspaced: bool  # the text holds characters of a script written without spaces


def rule_tokens(text: str) -> Tokens:
    """Lower-case ``text`` and split it once into tokens and words (see module doc)."""
    low = text.lower()
    if "...." in low or ". . ." in low:
        low = DOT_LEADER.sub(" ", low)
    unspaced = UNSPACED_CHAR.search(low) is not None
    if unspaced:
        low = UNSPACED_CHAR.sub(r" \g<0> ", low)
    tokens = low.split()
    strip = PUNCTUATION
    words = [w for w in (t.strip(strip) for t in tokens) if w]
    return Tokens(tokens, words, len(_NON_ALPHA_TOKEN.findall(low)), unspaced)


def line_words(line: str) -> int:
    """Words of one line: whitespace tokens, unspaced-script characters one each."""
    if UNSPACED_CHAR.search(line) is None:
        return len(line.split())
    return len(UNSPACED_CHAR.sub(r" \g<0> ", line).split())


def count_sentences(line: str) -> int:
    """Sentence ends in ``line`` (see module doc)."""
    return len(SENTENCE_END.findall(line))
