"""The quality model's text normalisation: :func:`fasttext_line` (one text) and
:func:`fasttext_lines` (a batch, vectorised with Arrow and numpy: the same output). Training
(``curate.filters.quality_train``) and scoring (``curate.filters.quality``) both read text
through it, so the model sees the same tokens in both."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

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
    """What the model predicts on: each text's :func:`fasttext_line` tokens (whitespace not
    collapsed: fastText skips runs of it), UTF-8, ending in fastText's end of line "\n", ready
    for :func:`predict_input`. ASCII punctuation is split off on the UTF-8 bytes with numpy
    (an ASCII byte is never part of a multi-byte character), the rest with one RE2 pass."""
    arr = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts, pa.string())
    arr = pc.cast(pc.fill_null(arr, ""), pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    spaced = _split_ascii_punct(pc.utf8_lower(arr))
    lines = _lines_of(spaced)
    # the RE2 pass, on the strings with a non-ASCII character only
    todo = np.flatnonzero(~pc.string_is_ascii(spaced).to_numpy(zero_copy_only=False))
    if len(todo):
        done = pc.replace_substring_regex(spaced.take(pa.array(todo)), _NON_ASCII_RE2, r" \1 ")
        for i, line in zip(todo.tolist(), _lines_of(done), strict=True):
            lines[i] = line
    for i in _with_python_lower(arr):
        lines[i] = fasttext_line(arr[i].as_py()).encode("utf-8") + b"\n"
    return lines


def _lines_of(arr: pa.LargeStringArray) -> list[bytes]:
    """Each string's UTF-8 bytes and a "\n" (no nulls)."""
    offsets, data = _offsets_and_bytes(arr)
    raw = data.tobytes()
    bounds = offsets.tolist()
    return [raw[a:b] + b"\n" for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def predict_input(model: Any, lines: list[bytes], k: int = 2) -> tuple[list, list]:
    """``model.predict(lines, k)`` for :func:`fasttext_input`'s lines: the wrapper's own
    per-line check and copy (``"\n" in line``, ``line + "\n"``) are already done, so its
    bound predictor is called directly (a tenth of the stage's time on small documents)."""
    return model.f.multilinePredict(lines, k, 0.0, "strict")


def _with_python_lower(arr: pa.LargeStringArray) -> list[int]:
    """Indices of the strings with Σ (UTF-8 CE A3) or İ (C4 B0): their lower-casing is
    Python's (final sigma; İ → i + combining dot)."""
    offsets, data = _offsets_and_bytes(arr)
    lead = np.flatnonzero((data == 0xCE) | (data == 0xC4))
    lead = lead[lead + 1 < len(data)]
    second = np.where(data[lead] == 0xCE, 0xA3, 0xB0)
    found = lead[data[lead + 1] == second]
    return np.unique(np.searchsorted(offsets, found, side="right") - 1).tolist()


def _offsets_and_bytes(arr: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """The strings' offsets (from 0) and UTF-8 bytes, as numpy views (no copy)."""
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2] or b"", np.uint8)[int(offsets[0]) : int(offsets[-1])]
    return offsets - offsets[0], data


# bytes < 0x80 that fasttext_line splits off: neither \w nor \s in Python (no byte >= 0x80 is)
_ASCII_PUNCT = np.array(
    [c < 128 and not (chr(c).isalnum() or c == 95 or chr(c).isspace()) for c in range(256)]
)
# (the spec; _ASCII_PUNCT_BYTES applies it). Python's whitespace that fastText does not split on
# (it splits on ' ' \t \n \v \f \r \0) becomes " ": ASCII (\n, \x1c-\x1f) on the bytes, the
# others in one RE2 pass over the strings with a non-ASCII character: other punctuation →
# " p ", Python whitespace fastText does not split on → "  " (group 1 empty)
_NON_ASCII_RE2 = (
    r"([^\x00-\x7f\p{L}\p{N}\x{85}\p{Z}])"
    r"|[\x{85}\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)
# the byte passes as ``bytes.translate`` tables (one C loop each; ~3x numpy's compares)
_ASCII_PUNCT_BYTES = bytes(_ASCII_PUNCT.astype(np.uint8))  # 1: split off, 0: kept as is
_ASCII_SPACE = bytes(32 if c == 10 or 0x1C <= c < 0x20 else c for c in range(256))
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
    offsets, data = _offsets_and_bytes(arr)
    raw = data.tobytes()
    data = np.frombuffer(raw.translate(_ASCII_SPACE), np.uint8)  # \n and \x1c-\x1f → " "
    where = np.flatnonzero(np.frombuffer(raw.translate(_ASCII_PUNCT_BYTES), np.bool_))
    middle = where + 2 * np.arange(len(where)) + 1  # where each punctuation byte goes
    out = np.full(len(data) + 2 * len(where), 32, np.uint8)
    kept = np.ones(len(out), bool)
    kept[middle - 1] = False
    kept[middle + 1] = False
    out[kept] = data  # every byte in order, a space either side of each punctuation byte
    new_offsets = offsets + 2 * np.searchsorted(where, offsets)
    return pa.LargeStringArray.from_buffers(
        len(arr), pa.py_buffer(new_offsets), pa.py_buffer(out), null_count=0
    )
