"""Bytes → text: compression, binary detection, charset decoding, ROT13, fortune and dictd
entries.

Decoding policy (:func:`decode_text`), in order:

1. a UTF-8/UTF-16/UTF-32 byte-order mark decides the codec;
2. strict UTF-8 (most of the corpus);
3. *mixed encodings*: some lines with non-ASCII characters are valid UTF-8 and other lines are
   not (a latin-1 paragraph pasted into a UTF-8 file) → reason ``mixed_encoding``;
4. a legacy encoding: charset-normalizer's best guess among the common legacy encodings
   (``LEGACY_ENCODINGS``: Windows/ISO Latin, Cyrillic, Greek, CJK ...) is accepted when at least
   ``MIN_LEGACY_LETTERS`` of the decoded non-ASCII characters are letters (é, ß, ж, 日: real
   legacy text; stray bytes in UTF-8 text decode to symbols such as ‰, †, ¦) → decoded; else
   reason ``invalid_utf8`` (bytes that are text in no encoding we know). Between the Latin
   single-byte code pages, which charset-normalizer cannot tell apart reliably, cp1252 is tried
   first.

Step 3 uses the same test on the non-UTF-8 lines: they must be legacy text for the file to be
``mixed_encoding``; garbage lines make it ``invalid_utf8``.

Binary detection (:func:`looks_binary`): a NUL byte in the first 64 KiB (after checking for a
UTF-16/32 BOM), or more than 10% control characters in the first 8 KiB.
"""

from __future__ import annotations

import codecs
import io
import re
import zlib

import charset_normalizer

LEGACY_ENCODINGS = [
    "cp1252", "latin_1", "iso8859_15", "cp1250", "iso8859_2", "cp1251", "koi8_r", "iso8859_5",
    "cp1253", "iso8859_7", "cp1254", "iso8859_9", "cp1257", "shift_jis", "cp932", "euc_jp",
    "gb18030", "big5", "euc_kr", "cp949",
]  # fmt: skip
MIN_LEGACY_LETTERS = 0.8
_LATIN_FAMILY = {"cp1250", "iso8859_2", "latin_1", "iso8859_15", "cp1254", "iso8859_9", "cp1257"}
_BINARY_PROBE = 64 * 1024
_CONTROL = bytes(range(32)).translate(None, b"\t\n\r\f\v\b\x1b")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_FORTUNE_SEPARATOR = re.compile(r"^%[ \t]*\r?$", re.MULTILINE)
_ROT13 = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)


class ReadError(Exception):
    """A document that cannot be read; ``reason`` is the quarantine reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def bounded_gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress gzip/dictzip ``data`` without ever holding more than ``max_bytes + 1`` bytes
    (a gzip bomb is stopped, reason ``too_large``)."""
    d = zlib.decompressobj(wbits=47)  # gzip or zlib header, auto-detected
    out = io.BytesIO()
    try:
        chunk = d.decompress(data, max_bytes + 1)
        out.write(chunk)
        while d.unconsumed_tail and out.tell() <= max_bytes:
            out.write(d.decompress(d.unconsumed_tail, max_bytes + 1 - out.tell()))
        # concatenated gzip members (dictzip is one member; plain gzip may be several)
        while d.eof and d.unused_data and out.tell() <= max_bytes:
            rest = d.unused_data
            d = zlib.decompressobj(wbits=47)
            out.write(d.decompress(rest, max_bytes + 1 - out.tell()))
    except zlib.error as e:
        raise ReadError("corrupt_gzip", str(e)) from None
    if out.tell() > max_bytes:
        raise ReadError("too_large", f"decompresses to more than {max_bytes} bytes")
    if not d.eof:
        raise ReadError("corrupt_gzip", "truncated gzip stream")
    return out.getvalue()


def gzip_declared_size(url: str) -> int | None:
    """The decompressed size a gzip file declares in its trailer (ISIZE: its last member's size
    mod 2**32), read without decompressing; None when the file is not gzip or unreadable. A hint
    for planning and a cheap early refusal; the real bound is counted while reading."""
    import fsspec

    try:
        with fsspec.open(url, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                return None
            fh.seek(-4, 2)
            return int.from_bytes(fh.read(4), "little")
    except Exception:  # noqa: BLE001 - a hint: any backend error means "unknown"
        return None


def maybe_decompress(url: str, data: bytes, max_bytes: int) -> bytes:
    """Transparently gunzip ``.gz``/``.dz`` files (and anything with a gzip magic number)."""
    if data[:2] == b"\x1f\x8b":
        return bounded_gunzip(data, max_bytes)
    if url.endswith((".gz", ".dz")):
        raise ReadError("corrupt_gzip", "no gzip header")
    return data


def looks_binary(data: bytes) -> bool:
    """True for data that is not text in any encoding (see module doc)."""
    head = data[:_BINARY_PROBE]
    if any(head.startswith(bom) for bom, _ in _BOMS):
        return False
    if b"\x00" in head:
        return True
    probe = head[:8192]
    if not probe:
        return False
    controls = len(probe) - len(probe.translate(None, _CONTROL))
    return controls / len(probe) > 0.10


def _utf8_line_split(data: bytes) -> tuple[int, list[bytes]]:
    """(count of lines with non-ASCII that are valid UTF-8, the lines that are not UTF-8)."""
    good = 0
    bad: list[bytes] = []
    for line in data.splitlines():
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
            good += 1
        except UnicodeDecodeError:
            bad.append(line)
    return good, bad


DECODE_REASONS = ("invalid_utf8", "mixed_encoding")  # what decode_text raises


def decode_text(data: bytes, declared: str | None = None) -> str:
    """Decode ``data`` following the module's policy; raises :class:`ReadError` with a reason
    of ``DECODE_REASONS``."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as e:
                raise ReadError("invalid_utf8", f"{codec} BOM but undecodable: {e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        first_error = str(e)
    if declared:
        try:
            codec = codecs.lookup(declared).name
            if codec not in ("utf-8", "utf-16", "utf-32"):
                return data.decode(codec)
        except (LookupError, UnicodeDecodeError):
            pass
    good, bad_lines = _utf8_line_split(data)
    legacy, why = _legacy_decode(data if not good else b"\n".join(bad_lines))
    if good and legacy is not None:
        raise ReadError("mixed_encoding", f"{good} UTF-8 lines, {len(bad_lines)} {why} lines")
    if legacy is None or good:
        raise ReadError("invalid_utf8", f"{first_error[:120]}; {why}")
    return legacy


def _legacy_decode(data: bytes) -> tuple[str | None, str]:
    """(text, encoding) when ``data`` reads as legacy text, else (None, why not)."""
    best = charset_normalizer.from_bytes(data[: 1 << 20], cp_isolation=LEGACY_ENCODINGS).best()
    if best is None:
        return None, "no legacy encoding fits"
    encodings = [best.encoding]
    if best.encoding in _LATIN_FAMILY:  # cp1250 vs cp1252 is a coin toss: prefer the commoner
        encodings.insert(0, "cp1252")
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
        non_ascii = [c for c in text if not c.isascii()]
        letters = sum(c.isalpha() for c in non_ascii) / max(1, len(non_ascii))
        if letters >= MIN_LEGACY_LETTERS:
            return text, encoding
    return None, f"{best.encoding}: too few letters among the non-ASCII characters"


_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9_.:-]{1,40})""", re.I
)
_XML_ENCODING = re.compile(rb"""<\?xml[^>]{0,100}?encoding\s*=\s*["']([A-Za-z0-9_.:-]{1,40})""")


def declared_charset(html: bytes) -> str | None:
    """Charset an HTML/XML document declares in its first 4 KiB, if any."""
    head = html[:4096]
    m = _XML_ENCODING.search(head) or _META_CHARSET.search(head)
    return m.group(1).decode("ascii") if m else None


def rot13(text: str) -> str:
    return text.translate(_ROT13)


_VOWELS = set("aeiouAEIOU")
_ROT_VOWELS = set("nrvbhNRVBH")  # what a, e, i, o, u become under ROT13


def looks_rot13(text: str) -> bool:
    """ROT13 turns the vowels a/e/i/o/u into n/r/v/b/h: in ROT13 text those letters are far more
    frequent than the real vowels (plain Latin-script text: ~40% vowels)."""
    sample = text[:20000]
    vowels = sum(c in _VOWELS for c in sample)
    rot_vowels = sum(c in _ROT_VOWELS for c in sample)
    letters = sum(c.isascii() and c.isalpha() for c in sample)
    return letters >= 50 and rot_vowels > 1.5 * vowels


# dictfmt writes every entry as its headword at the start of a line after a blank line; the
# definition is indented or follows on the next lines. A blank line followed by a lower-case
# line is a continuation paragraph of the same entry.
_DICTD_ENTRY = re.compile(r"\n[ \t]*\n(?=[^\sa-z])")


def split_dictd(text: str) -> list[str]:
    """Entries of a dictd data file (``.dict``, the uncompressed ``.dict.dz``) in file order:
    split at a blank line followed by a line that starts at column 0 with anything but a
    lower-case letter (the headword); blank entries dropped, each stripped."""
    return [e.strip() for e in _DICTD_ENTRY.split(text) if e.strip()]


def group_entries(entries: list[str], min_chars: int) -> list[tuple[int, str]]:
    """Consecutive entries joined by a blank line into blocks of at least ``min_chars``
    characters (the last block may be shorter): (index of the block's first entry, text).
    ``min_chars`` 0 gives one block per entry."""
    blocks: list[tuple[int, str]] = []
    start, current, size = 0, [], 0
    for i, entry in enumerate(entries):
        if not current:
            start = i
        current.append(entry)
        size += len(entry)
        if size >= min_chars:
            blocks.append((start, "\n\n".join(current)))
            current, size = [], 0
    if current:
        blocks.append((start, "\n\n".join(current)))
    return blocks


def split_fortunes(text: str) -> list[str]:
    """Entries of a fortune file: text between lines holding a single ``%``; blank entries
    dropped, each entry stripped of surrounding blank lines."""
    return [e.strip("\r\n") for e in _FORTUNE_SEPARATOR.split(text) if e.strip()]
