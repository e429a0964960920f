"""Bytes → text: compression, binary detection, charset decoding, ROT13, fortune entries.

Decoding policy (:func:`decode_text`), in order:

1. a UTF-8/UTF-16/UTF-32 byte-order mark decides the codec;
2. strict UTF-8 (most of the corpus);
3. *mixed encodings*: some lines with non-ASCII characters are valid UTF-8 and other lines are
   not (a latin-1 paragraph pasted into a UTF-8 file) → reason ``mixed_encoding``;
4. a legacy single encoding found by charset-normalizer is accepted only when its mess ratio
   ("chaos") is at most ``MAX_LEGACY_CHAOS`` (real latin-1 text scores < 0.001; UTF-8 text with
   stray bytes scores ~0.04) → decoded, else reason ``invalid_utf8``.

Binary detection (:func:`looks_binary`): a NUL byte in the first 64 KiB (after checking for a
UTF-16/32 BOM), or more than 10% control characters in the first 8 KiB.
"""

from __future__ import annotations

import codecs
import io
import re
import zlib

import charset_normalizer

MAX_LEGACY_CHAOS = 0.02
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
    return out.getvalue()


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


def _utf8_line_split(data: bytes) -> tuple[int, int]:
    """(lines with non-ASCII that are valid UTF-8, lines that are not valid UTF-8)."""
    good = bad = 0
    for line in data.splitlines():
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
            good += 1
        except UnicodeDecodeError:
            bad += 1
    return good, bad


def decode_text(data: bytes, declared: str | None = None) -> str:
    """Decode ``data`` following the module's policy; raises :class:`ReadError`."""
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
    good, bad = _utf8_line_split(data)
    if good and bad:
        raise ReadError("mixed_encoding", f"{good} UTF-8 lines, {bad} non-UTF-8 lines")
    best = charset_normalizer.from_bytes(data[: 1 << 20]).best()
    if best is not None and best.chaos <= MAX_LEGACY_CHAOS:
        try:
            return data.decode(best.encoding)
        except (UnicodeDecodeError, LookupError):
            pass
    guess = f"{best.encoding} chaos {best.chaos:.3f}" if best is not None else "no encoding fits"
    raise ReadError("invalid_utf8", f"{first_error[:120]}; {guess}")


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


def split_fortunes(text: str) -> list[str]:
    """Entries of a fortune file: text between lines holding a single ``%``; blank entries
    dropped, each entry stripped of surrounding blank lines."""
    return [e.strip("\r\n") for e in _FORTUNE_SEPARATOR.split(text) if e.strip()]
