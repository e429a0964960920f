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
import sys
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
# the same patterns in RE2 (Arrow), for batch_rule_tokens
_UNSPACED_RE2 = (
    r"[\x{3040}-\x{30ff}\x{31f0}-\x{31ff}\x{3400}-\x{4dbf}\x{4e00}-\x{9fff}\x{f900}-\x{faff}"
    r"\x{ff66}-\x{ff9f}\x{0e00}-\x{0eff}\x{1780}-\x{17ff}\x{1000}-\x{109f}\x{0f00}-\x{0fff}]"
)
_DOT_LEADER_RE2 = r"[ \t\x{a0}]*(?:\.[ \t\x{a0}]*){4,}"
# a text that may hold a dot leader or an unspaced-script character
_SPECIAL_RE2 = r"\.\.\.\.|\. \. \.|" + _UNSPACED_RE2
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


@dataclass(frozen=True)
class BatchTokens:
    """:func:`rule_tokens` of every text of a batch, as flat arrays (text ``i``'s words are
    ``words[word_offsets[i]:word_offsets[i + 1]]``)."""

    tokens: np.ndarray  # whitespace tokens per text (int64)
    non_alpha_tokens: np.ndarray  # tokens with no letter per text (int64)
    unspaced: np.ndarray  # bool per text
    words: pa.LargeStringArray  # every text's words, in order
    word_offsets: np.ndarray  # int64, len(texts) + 1


def batch_rule_tokens(texts: pa.Array | pa.ChunkedArray) -> BatchTokens:
    """:func:`rule_tokens` of every text (no nulls) at once, with Arrow compute over the whole
    batch instead of a Python loop per token, and the same tokens and words: texts with a
    character that Arrow lower-cases differently (final Σ, İ, letters newer than Python's
    Unicode tables) are lowered by Python; Arrow's whitespace split is Python's ``str.split``
    (the same characters, empty tokens dropped); the letter test is built from Python's own
    Unicode tables."""
    arr = pc.cast(texts, pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    low = pc.utf8_lower(arr)
    python_lower = _rows(pc.match_substring_regex(arr, _lower_differs_re2()))
    # the texts that need more than Arrow's lower-casing: done on that subset, put back at once
    special = np.union1d(python_lower, _rows(pc.match_substring_regex(low, _SPECIAL_RE2)))
    unspaced = np.zeros(n, dtype=bool)
    if len(special):
        sub = low.take(special)
        if len(python_lower):
            where = np.searchsorted(special, python_lower)
            lowered = pa.array([arr[int(i)].as_py().lower() for i in python_lower])
            sub = replace_rows(sub, where, lowered)
        dots = pc.or_(pc.match_substring(sub, "...."), pc.match_substring(sub, ". . ."))
        if len(rows := _rows(dots)):
            sub = replace_rows(
                sub, rows, pc.replace_substring_regex(sub.take(rows), _DOT_LEADER_RE2, " ")
            )
        if len(rows := _rows(pc.match_substring_regex(sub, _UNSPACED_RE2))):
            unspaced[special[rows]] = True
            sub = replace_rows(
                sub, rows, pc.replace_substring_regex(sub.take(rows), _UNSPACED_RE2, r" \0 ")
            )
        low = replace_rows(low, special, sub)
    # an empty token at a text's start or end. A last text of " ": Arrow 26's whitespace split
    # reads past the end of the last string (a last token of the batch came back with bytes that
    # follow the buffer); a sentinel keeps a real text from being last
    split = pc.utf8_split_whitespace(pa.concat_arrays([low, pa.array([" "], pa.large_string())]))
    tokens = pc.list_flatten(split)
    offsets = split.offsets.to_numpy()[:-1]  # the sentinel's tokens are empty: never words
    empty = pc.equal(pc.binary_length(tokens), 0).to_numpy(zero_copy_only=False)
    letter = pc.match_substring_regex(tokens, _letter_re2()).to_numpy(zero_copy_only=False)
    stripped = pc.utf8_trim(tokens, PUNCTUATION)
    kept = pc.greater(pc.binary_length(stripped), 0)

    def per_text(mask: np.ndarray) -> np.ndarray:
        total = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
        return total[offsets[1:]] - total[offsets[:-1]]

    empties = per_text(empty)
    words_per_text = per_text(kept.to_numpy(zero_copy_only=False))
    return BatchTokens(
        tokens=np.diff(offsets).astype(np.int64) - empties,
        non_alpha_tokens=per_text(~letter) - empties,
        unspaced=unspaced,
        words=stripped.filter(kept),
        word_offsets=np.concatenate(([0], np.cumsum(words_per_text))),
    )


def _rows(mask: pa.Array) -> np.ndarray:
    """Indices where a boolean Arrow array is true."""
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False))


def replace_rows(arr: pa.Array, rows: np.ndarray, values: pa.Array) -> pa.Array:
    """``arr`` with ``arr[rows[k]]`` replaced by ``values[k]`` (one gather)."""
    index = np.arange(len(arr), dtype=np.int64)
    index[rows] = len(arr) + np.arange(len(values), dtype=np.int64)
    both = pa.concat_arrays([arr, pc.cast(values, pa.large_string())])
    return both.take(pa.array(index))


def _every_code_point() -> np.ndarray:
    code_points = np.arange(sys.maxunicode + 1, dtype=np.uint32)
    code_points[0xD800:0xE000] = 0  # surrogates are not characters
    return code_points


def _re2_class(code_points: np.ndarray) -> str:
    """An RE2 character class of sorted, distinct ``code_points``."""
    breaks = np.flatnonzero(np.diff(code_points) != 1)
    starts = np.concatenate((code_points[:1], code_points[breaks + 1]))
    ends = np.concatenate((code_points[breaks], code_points[-1:]))
    return (
        "[" + "".join(rf"\x{{{a:x}}}-\x{{{b:x}}}" for a, b in zip(starts, ends, strict=True)) + "]"
    )


@cache
def _letter_re2() -> str:
    """The characters that make a token a word for ``_NON_ALPHA_TOKEN`` (Python's ``\\w`` but
    not ``\\d`` or ``_``), from Python's own Unicode tables, as an RE2 class."""
    every = _every_code_point().tobytes().decode("utf-32-le")
    letters = re.sub(r"[\W\d_]", "", every).encode("utf-32-le")
    return _re2_class(np.frombuffer(letters, np.uint32))


@cache
def lower_differs() -> np.ndarray:
    """The code points (sorted) whose lower case Arrow's ``utf8_lower`` gives differently from
    Python's ``str.lower`` (İ → i + combining dot, final sigma, letters newer than Python's
    tables): a text holding one is lower-cased by Python. Once per process (~0.06 s)."""
    code_points = _every_code_point()
    special = [0x130, 0x3A3]  # İ (two characters in Python), Σ (ς at a word's end)
    code_points[special] = 0
    every = code_points.tobytes().decode("utf-32-le")
    python = np.frombuffer(every.lower().encode("utf-32-le"), np.uint32)
    arrow = pc.utf8_lower(pa.array([every], pa.large_string()))[0].as_py()
    arrow = np.frombuffer(arrow.encode("utf-32-le"), np.uint32)
    if len(arrow) == len(python):
        differs = python != arrow
    else:  # not expected: another character that lower-cases to several
        chars = list(every)
        by_arrow = pc.utf8_lower(pa.array(chars, pa.large_string())).to_pylist()
        differs = np.array([a != c.lower() for a, c in zip(by_arrow, chars, strict=True)])
    differs = np.union1d(code_points[differs], special)
    return differs[differs > 0]


@cache
def _lower_differs_re2() -> str:
    """:func:`lower_differs` as an RE2 class."""
    return _re2_class(lower_differs())
