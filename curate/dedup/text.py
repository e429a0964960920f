"""Word splitting, normalisation and n-gram hashing for dedup, vectorised over Arrow columns.

One definition of a "word" serves exact dedup, near dedup, decontamination and the tests (the
heuristic rules count words their own way, Gopher's: :func:`curate.text.rule_tokens`):
runs of letters, digits, marks and ``_`` (RE2 ``[\\pL\\pN\\pM_]+``), with every character of an
unspaced script (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) a word of its own, so word
n-grams over Chinese or Japanese text are character n-grams and mixed text needs no switch.

Hashes are computed for a whole batch at once with numpy: a word's hash is a polynomial over its
UTF-8 bytes taken from prefix sums over the batch's byte buffer (``mod 2**64``; the multiplier is
odd, so its inverse exists and a word hashes the same wherever it sits), then finalised with the
MurmurHash3 64-bit mixer; an n-gram's hash is the same construction over word hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UNSPACED_SCRIPTS = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]"
NOT_WORD = r"[^\pL\pN\pM_]+"

_BYTE_BASE = np.uint64(0x100000001B3)  # odd: invertible mod 2**64
_WORD_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd
_LEN_MIX = np.uint64(0xC2B2AE3D27D4EB4F)


def _inverse_mod_2_64(a: int) -> int:
    return pow(a, -1, 1 << 64)


class _Powers:
    """Cached ``base**k`` and ``base**-k`` (mod 2**64) for k < capacity, grown on demand."""

    def __init__(self, base: np.uint64) -> None:
        self.base = base
        self.inverse = np.uint64(_inverse_mod_2_64(int(base)))
        self.up = np.ones(1, np.uint64)
        self.down = np.ones(1, np.uint64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.up) < n:
            size = max(n, 2 * len(self.up))
            up = np.full(size, self.base, np.uint64)
            up[0] = 1
            down = np.full(size, self.inverse, np.uint64)
            down[0] = 1
            self.up, self.down = np.cumprod(up), np.cumprod(down)
        return self.up[:n], self.down[:n]


_BYTE_POWERS = _Powers(_BYTE_BASE)
_WORD_POWERS = _Powers(_WORD_BASE)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that spreads every input bit)."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _window_hashes(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, powers: _Powers
) -> np.ndarray:
    """Polynomial hash of ``values[s:e]`` for every window, from one prefix sum (all uint64)."""
    if len(starts) == 0:
        return np.zeros(0, np.uint64)
    up, down = powers.get(len(values))
    prefix = np.zeros(len(values) + 1, np.uint64)
    np.cumsum(values * down, out=prefix[1:])
    return (prefix[ends] - prefix[starts]) * up[ends - 1]


def _as_large_string(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.large_string())
    if not pa.types.is_large_string(texts.type):
        texts = texts.cast(pa.large_string())
    return texts.fill_null("")


def split_words(texts: pa.Array | pa.ChunkedArray, lowercase: bool = True) -> pa.ListArray:
    """Words of each text (see the module docstring), as a ``large_list<large_string>``."""
    texts = _as_large_string(texts)
    if lowercase:
        texts = pc.utf8_lower(texts)
    texts = pc.replace_substring_regex(texts, UNSPACED_SCRIPTS, r" \0 ")
    parts = pc.split_pattern_regex(texts, NOT_WORD)
    flat = pc.list_flatten(parts)
    parent = pc.list_parent_indices(parts).to_numpy()
    keep = pc.greater(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False)
    counts = np.bincount(parent[keep], minlength=len(texts))
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    words = flat.filter(pa.array(keep)).cast(pa.large_string())
    return pa.LargeListArray.from_arrays(pa.array(offsets), words)


def words(text: str, lowercase: bool = True) -> list[str]:
    """The words of one string (the same split as :func:`split_words`)."""
    return split_words(pa.array([text], pa.large_string()), lowercase)[0].as_py()


def word_hashes(words_list: pa.ListArray | pa.LargeListArray) -> tuple[np.ndarray, np.ndarray]:
    """uint64 hash of every word, and per-text offsets into them (``len(texts) + 1``)."""
    offsets = words_list.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    flat = words_list.flatten()
    if len(flat) == 0:
        return np.zeros(0, np.uint64), offsets
    flat = flat.cast(pa.large_string())
    _, off_buf, data_buf = flat.buffers()
    byte_off = np.frombuffer(off_buf, np.int64)[flat.offset : flat.offset + len(flat) + 1]
    data = np.frombuffer(data_buf, np.uint8)[byte_off[0] : byte_off[-1]].astype(np.uint64) + 1
    byte_off = byte_off - byte_off[0]
    h = _window_hashes(data, byte_off[:-1], byte_off[1:], _BYTE_POWERS)
    lengths = (byte_off[1:] - byte_off[:-1]).astype(np.uint64)
    return fmix64(h + lengths * _LEN_MIX), offsets


@dataclass(frozen=True)
class Shingles:
    """Hashed n-grams of a batch of texts: ``hashes[offsets[i]:offsets[i+1]]`` belong to text i."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len(texts) + 1

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc_of(self) -> np.ndarray:
        """Index of the text each hash belongs to."""
        return np.repeat(np.arange(len(self.offsets) - 1), self.counts())


def ngram_hashes(
    word_hash: np.ndarray, offsets: np.ndarray, n: int, short: bool = True
) -> Shingles:
    """Hashes of every word n-gram inside each text (never across texts).

    A text with fewer than ``n`` (but at least one) words gives one n-gram of all its words when
    ``short`` is true, none otherwise.
    """
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    counts = np.diff(offsets)
    full = np.maximum(counts - n + 1, 0)
    if short:
        full = np.where((counts > 0) & (counts < n), 1, full)
    out_offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(full, out=out_offsets[1:])
    total = int(out_offsets[-1])
    doc = np.repeat(np.arange(len(counts)), full)
    starts = offsets[:-1][doc] + (np.arange(total) - out_offsets[:-1][doc])
    ends = np.minimum(starts + n, offsets[1:][doc])
    h = _window_hashes(word_hash, starts, ends, _WORD_POWERS)
    lengths = (ends - starts).astype(np.uint64)
    return Shingles(fmix64(h ^ (lengths * _LEN_MIX)), out_offsets)


def unique_per_text(sh: Shingles) -> Shingles:
    """Sorted distinct hashes of each text."""
    if len(sh.hashes) == 0:
        return sh
    hashes = sh.hashes.copy()
    bounds = sh.offsets.tolist()
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        hashes[start:stop].sort()  # each text's slice in place: ~25x faster than one lexsort
    doc = sh.doc_of()
    first = np.ones(len(hashes), bool)
    first[1:] = (hashes[1:] != hashes[:-1]) | (doc[1:] != doc[:-1])
    counts = np.bincount(doc[first], minlength=len(sh.offsets) - 1)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Shingles(hashes[first], offsets)


def slices_by_bytes(texts: pa.ChunkedArray | pa.Array, budget: int) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of consecutive texts of about ``budget`` UTF-8 bytes each
    (a longer text alone): hashing a batch costs ~10 bytes of memory per text byte, so a
    whole part at once would need gigabytes."""
    lengths = pc.binary_length(texts).fill_null(0).to_numpy(zero_copy_only=False)
    bounds, start, acc = [], 0, 0
    for i, length in enumerate(lengths.tolist()):
        if acc and acc + length > budget:
            bounds.append((start, i))
            start, acc = i, 0
        acc += length
    if start < len(lengths) or not bounds:
        bounds.append((start, len(lengths)))
    return bounds


def text_shingles(
    texts: pa.Array | pa.ChunkedArray,
    n: int,
    lowercase: bool = True,
    unique: bool = True,
    short: bool = True,
) -> Shingles:
    """Word n-gram hashes of each text (distinct and sorted per text when ``unique``).

    ``short``: a text of 1..n-1 words gives one n-gram of all its words (else none).
    """
    wh, offsets = word_hashes(split_words(texts, lowercase))
    sh = ngram_hashes(wh, offsets, n, short)
    return unique_per_text(sh) if unique else sh


def normalize(
    texts: pa.Array | pa.ChunkedArray,
    lowercase: bool = True,
    collapse_whitespace: bool = True,
    strip_punctuation: bool = False,
    strip_digits: bool = False,
    nfkc: bool = True,
) -> pa.Array:
    """Normalised texts for exact matching, vectorised: NFKC, lower-case, digits removed,
    punctuation (anything not a letter, digit, mark or space) to a space, whitespace collapsed.

    (The filters' :mod:`curate.text` splits one document for the heuristic rules, Gopher's
    way; this module is the one normalisation and word split that dedup compares and hashes.)
    """
    texts = _as_large_string(texts)
    if nfkc:
        texts = pc.utf8_normalize(texts, form="NFKC")
    if lowercase:
        texts = pc.utf8_lower(texts)
    if strip_digits:
        texts = pc.replace_substring_regex(texts, r"\pN+", "")
    if strip_punctuation:
        texts = pc.replace_substring_regex(texts, r"[^\pL\pN\pM\s\p{Z}]+", " ")
    if collapse_whitespace:
        texts = pc.utf8_trim_whitespace(pc.replace_substring_regex(texts, r"[\s\p{Z}]+", " "))
    return texts
