"""The quality model's text normalisation: :func:`fasttext_line` (one text) and
:func:`fasttext_lines` (a batch, vectorised with Arrow and numpy: the same output). Training
(``curate.filters.quality_train``) and scoring (``curate.filters.quality``) both read text
through it, so the model sees the same tokens in both."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_PUNCT = re.compile(r"([^\w\s])")


def fasttext_line(text: str) -> str:
    """One fastText input line: lower-cased, punctuation split off, whitespace collapsed."""
    return " ".join(_PUNCT.sub(r" \1 ", text.lower()).split())


# fasttext_line's punctuation class in RE2 (Arrow): Python's Unicode ``\w`` is letters, numbers
# and "_"; its ``\s`` (str.isspace) is RE2's \s plus \v, \x1c-\x1f, \x85 and the Z categories
_PUNCT_RE2 = r"[^\p{L}\p{N}_\s\x0b\x1c-\x1f\x85\p{Z}]"
# the two letters whose str.lower() depends on context or grows (final sigma; İ → i + dot)
_PYTHON_LOWER = "[Σİ]"


def fasttext_lines(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> list[str]:
    """:func:`fasttext_line` of every text, vectorised: lower-casing and the punctuation split
    are vectorised over the whole batch (Arrow, numpy), then whitespace is collapsed. Same
    output for every character of Python's Unicode tables (texts with a letter whose
    lower-casing Arrow does differently take :func:`fasttext_line`)."""
    return [" ".join(line.split()) for line in _spaced_lines(texts)]


def _spaced_lines(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> list[str]:
    """:func:`fasttext_lines` before whitespace is collapsed: the same fastText tokens (what
    :func:`score` predicts on, without the collapse), on one line. ASCII punctuation is split
    off on the UTF-8 bytes with numpy (an ASCII byte is never part of a multi-byte character),
    the rest with one RE2 pass."""
    arr = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts, pa.string())
    arr = pc.fill_null(arr, "")
    lowered = pc.cast(pc.utf8_lower(arr), pa.large_string())
    if isinstance(lowered, pa.ChunkedArray):
        lowered = lowered.combine_chunks()
    spaced = _split_ascii_punct(lowered)
    lines = pc.replace_substring_regex(spaced, _NON_ASCII_RE2, r" \1 ").to_pylist()
    special = pc.match_substring_regex(arr, _PYTHON_LOWER).to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(special):
        lines[i] = fasttext_line(arr[int(i)].as_py())
    return lines


# bytes < 0x80 that fasttext_line splits off: neither \w nor \s in Python (no byte >= 0x80 is)
_ASCII_PUNCT = np.array(
    [c < 128 and not (chr(c).isalnum() or c == 95 or chr(c).isspace()) for c in range(256)]
)
# Python's whitespace that fastText does not split on (it splits on ' ' \t \n \v \f \r \0)
# becomes " ": ASCII on the bytes, the others in the RE2 pass
_ASCII_SPACE = np.array([32 if c == 10 or 0x1C <= c <= 0x1F else c for c in range(256)], np.uint8)
# then one RE2 pass: other punctuation → " p ", Python whitespace fastText does not split on
# → "  " (group 1 empty)
_NON_ASCII_RE2 = (
    r"([^\x00-\x7f\p{L}\p{N}\x{85}\p{Z}])"
    r"|[\x{85}\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)
_CHUNK_BYTES = 16 << 20  # bytes of text per numpy pass (bounds its temporaries)


def _split_ascii_punct(arr: pa.LargeStringArray) -> pa.Array:
    """ " p " for every ASCII punctuation byte ``p`` of every string (no nulls), in chunks."""
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    pieces, start = [], 0
    while start < len(arr):
        stop = int(np.searchsorted(offsets, offsets[start] + _CHUNK_BYTES, side="right")) - 1
        stop = min(max(stop, start + 1), len(arr))
        pieces.append(_split_chunk(arr.slice(start, stop - start)))
        start = stop
    return pa.concat_arrays(pieces) if pieces else arr


def _split_chunk(arr: pa.LargeStringArray) -> pa.Array:
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    first = int(offsets[0])
    data = np.frombuffer(bufs[2], np.uint8)[first : int(offsets[-1])] if bufs[2] else b""
    data = _ASCII_SPACE[np.asarray(data, np.uint8)]  # \n and \x1c-\x1f → " "
    offsets = offsets - first
    where = np.flatnonzero(_ASCII_PUNCT[data])
    out = np.repeat(data, 1 + 2 * _ASCII_PUNCT[data])  # each punctuation byte three times
    middle = where + 2 * np.arange(len(where)) + 1
    out[middle - 1] = 32
    out[middle + 1] = 32  # " p "
    new_offsets = offsets + 2 * np.searchsorted(where, offsets)
    return pa.LargeStringArray.from_buffers(
        len(arr), pa.py_buffer(new_offsets), pa.py_buffer(out), null_count=0
    )
