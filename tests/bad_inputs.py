"""A corpus of bad inputs built from the real sample (issue 9.1): every file names the reason
the extract stage must give it (quarantine or removal) under the default ``ExtractConfig``.

``make_bad_corpus(out_dir) -> {absolute path: expected reason}``. Multi-record files (WARC,
JSONL) name the reason of their bad record; their good records (``KEPT_RECORDS``: file name,
offset) must still be kept. Issue 16 adds entries that are bad for the listing rather than the
reader: a file name that is not UTF-8 (read, and named with ``\\xNN`` escapes), symbolic links
(followed; a loop and a broken link skipped by reason), a Sluice run directory (never read); the
entries the listing must skip are ``EXPECTED_SKIPS`` (path below the corpus folder: reason).
"""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
EURO_PDF = (
    SAMPLE / "pdf/texlive-fonts-recommended-doc/usr/share/doc/texlive-doc/latex/euro/euro.pdf"
)
WASYSYM_PDF = (
    SAMPLE / "pdf/texlive-fonts-recommended-doc/usr/share/doc/texlive-doc/latex/wasysym/wasysym.pdf"
)
HTML_EN = SAMPLE / "html/debian-reference-en/usr/share/debian-reference/ch08.en.html"
CODE_ASCII = SAMPLE / "code/libpython3.11-stdlib/usr/lib/python3.11/colorsys.py"
FORTUNE_ES = SAMPLE / "fortune/fortunes-es/usr/share/games/fortunes/es/amistad.fortunes"
CHANGELOG_GZ = SAMPLE / "meta/debian-reference-en/changelog.gz"

HUGE_HTML_BYTES = 50 << 20
NESTED_DIVS = 100_000
BLANK_PAGES = 2000
BOMB_BYTES = 256 << 20  # a gzip body that inflates to 256 MiB (> max_bytes 32 MiB)
JSONL_BOMB_BYTES = 1 << 30  # a .jsonl.gz of ~2 MB that inflates to 1 GiB (> max_file_bytes)
NESTED_JSON = 100_000
BAD_NAME = b"latin1-caf\xe9.txt"  # a file name that is not UTF-8
KEPT_RECORDS = {
    ("gzip-bomb.warc.gz", 0),
    ("broken-headers.warc", 0),
    ("lone-surrogate.jsonl", 0),
    ("lone-surrogate.jsonl", 2),
    ("deep-nesting.jsonl", 0),
    ("deep-nesting.jsonl", 2),
    ("latin1-caf\\xe9.txt", 0),  # its source shows the byte as an escape
    ("linked.txt", 0),  # a link to a file outside the corpus folder: followed
    ("colorsys.py", 0),  # in a linked folder outside the corpus folder: followed
}
EXPECTED_SKIPS = {
    "linked-dir/loop": "symlink_loop",
    "broken-link.txt": "broken_link",
    "old-run": "sluice_run_dir",
}


def truncated_pdf() -> bytes:
    data = EURO_PDF.read_bytes()
    return data[: len(data) * 6 // 10]


def encrypted_pdf() -> bytes:
    import pikepdf

    buf = io.BytesIO()
    with pikepdf.open(WASYSYM_PDF) as pdf:
        pdf.save(buf, encryption=pikepdf.Encryption(user="secret", owner="owner"))
    return buf.getvalue()


def blank_pages_pdf(pages: int = BLANK_PAGES) -> bytes:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    for _ in range(pages):
        doc.new_page(595, 842).close()
    buf = io.BytesIO()
    doc.save(buf)
    doc.close()
    return buf.getvalue()


def sprinkle_invalid_bytes(data: bytes, rate: float = 0.02, seed: int = 0) -> bytes:
    """Insert lone UTF-8 continuation bytes (0x80-0xBF: never valid on their own)."""
    rng = random.Random(seed)
    out = bytearray()
    for byte in data:
        out.append(byte)
        if rng.random() < rate:
            out.append(rng.randint(0x80, 0xBF))
    return bytes(out)


def mixed_encoding_text() -> bytes:
    text = FORTUNE_ES.read_text("utf-8")
    half = len(text) // 2
    return text[:half].encode("utf-8") + text[half:].encode("latin-1", errors="replace")


def huge_html(size: int = HUGE_HTML_BYTES) -> bytes:
    page = HTML_EN.read_bytes()
    head, _, body = page.partition(b"<body")
    body = b"<body" + body
    inner = body[body.index(b">") + 1 : body.rindex(b"</body>")]
    copies = size // len(inner) + 1
    return head + b"<body>" + inner * copies + b"</body></html>"


def nested_html(depth: int = NESTED_DIVS) -> bytes:
    text = FORTUNE_ES.read_text("utf-8").split("\n%\n")[0]
    return (
        b"<html><head><title>nested</title></head><body>"
        + b"<div>" * depth
        + f"<p>{text}</p>".encode()
        + b"</div>" * depth
        + b"</body></html>"
    )


def _warc_response(writer, uri: str, body: bytes, headers: list[tuple[str, str]]):  # noqa: ANN001, ANN202
    from warcio.statusandheaders import StatusAndHeaders

    http = StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1")
    return writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=http)


def bomb_warc() -> bytes:
    """A good HTML response, then one whose gzip Content-Encoding inflates to 256 MiB."""
    from warcio.warcwriter import WARCWriter

    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=9, mtime=0) as gz:
        chunk = b"<p>" + b"A" * (1 << 20) + b"</p>"
        for _ in range(BOMB_BYTES // len(chunk) + 1):
            gz.write(chunk)
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    html_type = [("Content-Type", "text/html; charset=utf-8")]
    writer.write_record(
        _warc_response(writer, "http://example.org/ch08", HTML_EN.read_bytes(), html_type)
    )
    headers = [*html_type, ("Content-Encoding", "gzip")]
    writer.write_record(_warc_response(writer, "http://example.org/bomb", bomb.getvalue(), headers))
    return buf.getvalue()


def broken_header_warc() -> bytes:
    """A good record, then a record whose header block is garbage."""
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=False)
    html_type = [("Content-Type", "text/html; charset=utf-8")]
    writer.write_record(
        _warc_response(writer, "http://example.org/ch08", HTML_EN.read_bytes(), html_type)
    )
    buf.write(b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: not-a-number\r\n\r\n<html>")
    buf.write(bytes(range(256)) * 4 + b"\r\n\r\n")
    return buf.getvalue()


def _json_line(text: str) -> bytes:
    import json

    return json.dumps({"text": text}).encode() + b"\n"


def lone_surrogate_jsonl() -> bytes:
    """A good line, a line whose text holds the escape of a lone surrogate, a good line."""
    entries = FORTUNE_ES.read_text("utf-8").split("\n%\n")
    bad = _json_line(entries[1]).replace(b'"}', b' \\ud800 fin"}')
    return _json_line(entries[0]) + bad + _json_line(entries[2])


def deep_nesting_jsonl(depth: int = NESTED_JSON) -> bytes:
    """A good line, a line nested ``depth`` deep (RecursionError in json), a good line."""
    entries = FORTUNE_ES.read_text("utf-8").split("\n%\n")
    return _json_line(entries[3]) + b"[" * depth + b"\n" + _json_line(entries[4])


def jsonl_gzip_bomb(size: int = JSONL_BOMB_BYTES) -> bytes:
    """A single-member gzip of JSONL lines (real text) that inflates to ``size`` bytes."""
    import zlib

    line = _json_line(FORTUNE_ES.read_text("utf-8").split("\n%\n")[0])
    chunk = line * ((1 << 20) // len(line) + 1)
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    out = io.BytesIO()
    for _ in range(size // len(chunk) + 1):
        out.write(z.compress(chunk))
    out.write(z.flush())
    return out.getvalue()


def add_listing_cases(out_dir: Path) -> None:
    """Entries that are bad for the listing (module doc); the linked targets live next to
    ``out_dir``, not inside it."""
    import os

    outside = out_dir.parent / f"{out_dir.name}-outside"
    (outside / "lib").mkdir(parents=True, exist_ok=True)
    (outside / "lib" / "colorsys.py").write_bytes(CODE_ASCII.read_bytes())
    (outside / "colorsys.txt").write_bytes(CODE_ASCII.read_bytes())
    (out_dir / "linked-dir").symlink_to(outside / "lib", target_is_directory=True)
    (outside / "lib" / "loop").symlink_to(outside / "lib", target_is_directory=True)
    (out_dir / "linked.txt").symlink_to(outside / "colorsys.txt")
    (out_dir / "broken-link.txt").symlink_to(outside / "no-such-file.txt")
    with open(os.path.join(os.fsencode(out_dir), BAD_NAME), "wb") as f:
        f.write(CODE_ASCII.read_bytes())
    run = out_dir / "old-run"  # a run directory of an earlier run: its files are outputs
    (run / "extract").mkdir(parents=True)
    (run / "config.json").write_text('{"hash": "x", "config": {}}\n')
    (run / "parts.json").write_text('{"parts": []}\n')
    (run / "stats.json").write_text('{"stages": []}\n')
    (run / "funnel.md").write_text("| stage | in | kept |\n")


def make_bad_corpus(out_dir: Path) -> dict[str, str]:
    """Write the bad corpus into ``out_dir``; return ``{path: expected reason}`` (listing
    cases: see the module doc)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    changelog_gz = CHANGELOG_GZ.read_bytes()
    html = HTML_EN.read_bytes()
    files: dict[str, tuple[bytes, str]] = {
        "truncated.pdf": (truncated_pdf(), "corrupt_pdf"),
        "encrypted.pdf": (encrypted_pdf(), "encrypted_pdf"),
        "blank-2000-pages.pdf": (blank_pages_pdf(), "empty_text"),
        "empty.pdf": (b"", "not_pdf"),
        "pdf-named.html": (WASYSYM_PDF.read_bytes(), "binary_file"),
        "deflate-stream.html": (changelog_gz[10:], "binary_file"),
        "invalid-utf8.txt": (sprinkle_invalid_bytes(CODE_ASCII.read_bytes()), "invalid_utf8"),
        "invalid-utf8.html": (sprinkle_invalid_bytes(html, seed=1), "invalid_utf8"),
        "mixed-encoding.fortunes": (mixed_encoding_text(), "mixed_encoding"),
        "huge-50MB.html": (huge_html(), "too_large"),
        "nested-100k-divs.html": (nested_html(), "empty_text"),
        "empty.html": (b"", "empty_text"),
        "whitespace.txt": (b" \n\t\n  \n", "empty_text"),
        "truncated.txt.gz": (changelog_gz[: len(changelog_gz) // 2], "corrupt_gzip"),
        "gzip-bomb.warc.gz": (bomb_warc(), "too_large"),
        "broken-headers.warc": (broken_header_warc(), "warc_error"),
        "lone-surrogate.jsonl": (lone_surrogate_jsonl(), "invalid_unicode"),
        "deep-nesting.jsonl": (deep_nesting_jsonl(), "invalid_json"),
        "bomb-1GiB.jsonl.gz": (jsonl_gzip_bomb(), "too_large"),
    }
    expected = {}
    for name, (data, reason) in files.items():
        path = out_dir / name
        path.write_bytes(data)
        expected[str(path)] = reason
    add_listing_cases(out_dir)
    return expected
