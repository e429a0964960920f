"""The quality model's text normalisation: :func:`fasttext_line` (one text) and
:func:`fasttext_lines` (a batch, vectorised with Arrow and numpy: the same output). Training
(``curate.filters.quality_train``) and scoring (``curate.filters.quality``) both read text
through it, so the model sees the same tokens in both."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.text import lower_differs

_PUNCT = re.compile(r"([^\w\s])")


def fasttext_line(text: str) -> str:
    """One fastText input line: lower-cased, punctuation split off, whitespace collapsed."""
    return " ".join(_PUNCT.sub(r" \1 ", text.lower()).split())


def fasttext_lines(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> list[str]:
    """:func:`fasttext_line` of every text, vectorised: lower-casing and the punctuation split
    are vectorised over the whole batch (Arrow, numpy), then whitespace is collapsed. Same
    output for every character of Python's Unicode tables (texts with a letter whose
    lower-casing Arrow does differently take :func:`fasttext_line`)."""
    return [" ".join(line.split()) for line in _spaced_lines(texts)]


def _spaced_lines(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> list[str]:
    """:func:`fasttext_lines` before whitespace is collapsed: the same fastText tokens, one
    line each (:func:`fasttext_input` as text, without its end of line)."""
    return [line[:-1].decode("utf-8") for line in fasttext_input(texts)]


def fasttext_input(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> list[bytes]:
    r"""What the model predicts on: each text's :func:`fasttext_line` tokens (whitespace not
    collapsed: fastText skips runs of it), UTF-8, ending in fastText's end of line "\n", ready
    for :func:`predict_input`. Lower-cased by Arrow; the punctuation split off on the UTF-8
    bytes with numpy, every character classed by Python's own tables (:func:`_char_class`)."""
    arr = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts, pa.string())
    arr = pc.cast(pc.fill_null(arr, ""), pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    lowered = pc.utf8_lower(arr)
    offsets = np.frombuffer(lowered.buffers()[1], np.int64)[
        lowered.offset : lowered.offset + len(lowered) + 1
    ]
    lines: list[bytes] = []
    start = 0
    while start < len(lowered):  # in chunks of ~_CHUNK_BYTES: bounds the numpy temporaries
        stop = int(np.searchsorted(offsets, offsets[start] + _CHUNK_BYTES, side="right")) - 1
        stop = min(max(stop, start + 1), len(lowered))
        lines += _spaced_chunk(lowered.slice(start, stop - start))
        start = stop
    for i in _with_python_lower(arr):
        lines[i] = fasttext_line(arr[i].as_py()).encode("utf-8") + b"\n"
    return lines


def predict_input(model: Any, lines: list[bytes], k: int = 2) -> tuple[list, list]:
    r"""``model.predict(lines, k)`` for :func:`fasttext_input`'s lines: the wrapper's own
    per-line check and copy (``"\n" in line``, ``line + "\n"``) are already done, so its
    bound predictor is called directly (~5% of the stage's time)."""
    return model.f.multilinePredict(lines, k, 0.0, "strict")


def _char_class(ch: str) -> int:
    r"""What :func:`fasttext_line` does with a character: 1 split off (neither ``\w`` nor
    ``\s`` for Python's ``re``), 2 a space (whitespace fastText does not split on, which
    must not glue two tokens), 0 kept."""
    if ch.isspace():
        return 0 if ch in _FASTTEXT_SPACE else 2
    return 0 if ch.isalnum() or ch == "_" else 1


_FASTTEXT_SPACE = " \t\n\v\f\r\0"  # what fastText splits words on


@cache
def _bmp_class() -> np.ndarray:
    """:func:`_char_class` of every code point below 0x10000 (built once per process, ~10 ms;
    the rarer code points above are classed per batch)."""
    return np.fromiter((_char_class(chr(c)) for c in range(0x10000)), np.uint8, 0x10000)


def _spaced_chunk(arr: pa.LargeStringArray) -> list[bytes]:
    r""":func:`fasttext_input`'s lines of lower-cased strings (no nulls): a space either side
    of every character of class 1 (:func:`_char_class`), the bytes of class-2 characters made
    spaces, "\n" after each string. ASCII on the bytes with numpy; the (rare) multi-byte
    characters to split off by cutting their strings' lines in Python."""
    offsets, data = _offsets_and_bytes(arr)
    raw = data.tobytes()
    where = np.flatnonzero(np.frombuffer(raw.translate(_ASCII_PUNCT_BYTES), np.bool_))
    for byte in _ASCII_SPACE:
        if byte in raw:
            raw = raw.replace(byte, b" ")
    m = len(arr)
    punct_before = np.searchsorted(where, offsets)  # ASCII punctuation before each string
    new_offsets = offsets + 2 * punct_before + np.arange(m + 1)  # + each string's "\n"
    # where each punctuation byte goes: 2 spaces for each one before it, 1 "\n" for each string
    middle = where + 2 * np.arange(len(where)) + 1
    middle += np.repeat(np.arange(m), np.diff(punct_before))
    ends = new_offsets[1:] - 1
    out = np.full(len(data) + 2 * len(where) + m, 32, np.uint8)
    kept = np.ones(len(out), bool)
    kept[middle - 1] = False
    kept[middle + 1] = False
    kept[ends] = False
    out[kept] = np.frombuffer(raw, np.uint8)  # every byte in order, the spaces and "\n" between
    out[ends] = 10
    cuts = (
        _non_ascii_cuts(data, offsets, where, out, new_offsets)
        if data.max(initial=0) >= 0x80
        else {}
    )
    bounds = new_offsets.tolist()
    lines = [out[a:b].tobytes() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    for j, at in cuts.items():
        line = lines[j]
        pieces = [line[a:b] for a, b in zip([0, *at], [*at, len(line)], strict=True)]
        lines[j] = b" ".join(pieces)
    return lines


def _non_ascii_cuts(
    data: np.ndarray, offsets: np.ndarray, where: np.ndarray, out: np.ndarray, new: np.ndarray
) -> dict[int, list[int]]:
    r"""For the multi-byte characters of ``data``: writes " " over the bytes of those of class
    2 in ``out`` (:func:`_spaced_chunk`'s bytes: ASCII punctuation at ``where`` spaced, a "\n"
    after each string, ``new`` its offsets); returns, for each string holding one of class 1,
    the places in its line to put a space (before and after each such character)."""
    lead = np.flatnonzero(data >= 0xC0)
    if not len(lead):
        return {}
    code, size = _code_points(data, lead)
    kind = _bmp_class()[np.minimum(code, 0xFFFF)]
    astral = np.flatnonzero(code > 0xFFFF)
    if len(astral):
        points, index = np.unique(code[astral], return_inverse=True)
        kind[astral] = np.array([_char_class(chr(c)) for c in points.tolist()], np.uint8)[index]
    string = np.searchsorted(offsets, lead, side="right") - 1
    at = lead + 2 * np.searchsorted(where, lead) + string  # where each one is in ``out``
    space = kind == 2
    for k in range(4):  # every byte of a class-2 character becomes " "
        out[at[space & (size > k)] + k] = 32
    punct = np.flatnonzero(kind == 1)
    cuts: dict[int, list[int]] = {}
    for j, start, n in zip(
        string[punct].tolist(),
        (at[punct] - new[string[punct]]).tolist(),
        size[punct].tolist(),
        strict=True,
    ):
        cuts.setdefault(j, []).extend((start, start + n))
    return cuts


def _with_python_lower(arr: pa.LargeStringArray) -> list[int]:
    """Indices of the strings holding a character Arrow lower-cases differently from Python
    (:func:`curate.text.lower_differs`: İ, Σ, letters newer than Python's tables): they take
    :func:`fasttext_line`."""
    offsets, data = _offsets_and_bytes(arr)
    lead = np.flatnonzero(data >= 0xC0)
    if not len(lead):
        return []
    code, _ = _code_points(data, lead)
    found = lead[_lower_differs_table()[code]]
    return np.unique(np.searchsorted(offsets, found, side="right") - 1).tolist()


@cache
def _lower_differs_table() -> np.ndarray:
    """:func:`curate.text.lower_differs` as a table over every code point."""
    table = np.zeros(sys.maxunicode + 1, bool)
    table[lower_differs()] = True
    return table


def _code_points(data: np.ndarray, lead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The code point and the UTF-8 length of the multi-byte character starting at each of
    ``lead`` (indices into ``data``, valid UTF-8)."""
    last = len(data) - 1
    b = [data[lead].astype(np.uint32)]
    b += [data[np.minimum(lead + k, last)].astype(np.uint32) & 0x3F for k in (1, 2, 3)]
    size = 2 + (b[0] >= 0xE0) + (b[0] >= 0xF0)
    code = np.where(
        size == 2,
        ((b[0] & 0x1F) << 6) | b[1],
        np.where(
            size == 3,
            ((b[0] & 0x0F) << 12) | (b[1] << 6) | b[2],
            ((b[0] & 0x07) << 18) | (b[1] << 12) | (b[2] << 6) | b[3],
        ),
    )
    return code, size


def _offsets_and_bytes(arr: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """The strings' offsets (from 0) and UTF-8 bytes, as numpy views (no copy)."""
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2] or b"", np.uint8)[int(offsets[0]) : int(offsets[-1])]
    return offsets - offsets[0], data


# bytes < 0x80 that fasttext_line splits off: neither \w nor \s in Python (no byte >= 0x80 is)
_ASCII_PUNCT = np.array([c < 128 and _char_class(chr(c)) == 1 for c in range(256)])
# 1 for an ASCII byte split off, as a ``bytes.translate`` table (one C loop: ~3x numpy's
# compares); Python's ASCII whitespace that fastText does not split on (\n, its end of line,
# \x1c-\x1f) is made " " by ``bytes.replace``
_ASCII_PUNCT_BYTES = bytes(_ASCII_PUNCT.astype(np.uint8))
_ASCII_SPACE = [bytes([c]) for c in (10, 0x1C, 0x1D, 0x1E, 0x1F)]
_CHUNK_BYTES = 16 << 20  # bytes of text per numpy pass (bounds its temporaries)
