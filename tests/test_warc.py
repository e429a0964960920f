"""WARC reading with FastWARC on a WARC of real Debian pages with real HTTP headers: the same
documents (ids, text) as the warcio reader gave, HTTP decoding, and a truncated record
quarantined as ``truncated`` (issue 16.5), never kept as half a document."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from curate.readers import InputSpec, extract_part, list_inputs
from curate.readers.html import extract_html
from curate.readers.text import decode_text
from curate.readers.warc import http_response, warc_record, write_warc
from curate.schema import doc_id
from tests.test_extract import LANG_PAGES, REFERENCE, SAMPLE, _balanced

PAGES = [
    *sorted(LANG_PAGES.values()),
    *sorted((REFERENCE / "debian-handbook").rglob("*.html"))[:4],
    *sorted((REFERENCE / "python3.11-doc").rglob("*.html"))[:2],
]
CHANGELOG = SAMPLE / "meta/debian-reference-it/changelog.gz"
HTML_TYPE = "text/html; charset=UTF-8"
HTTP_RESPONSE = "application/http; msgtype=response"


def _chunked(body: bytes, size: int = 4096) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def build_records() -> tuple[list[bytes], dict[int, Path]]:
    """(serialised records, {record index: page} of the HTML responses). Layout: warcinfo;
    per page a request and a response (the 3rd page gzip + chunked); a text/plain changelog, a
    PNG (non-HTML), a metadata record; last, an HTML response (cut short by the tests)."""
    records = [warc_record("warcinfo", "", b"software: sluice-test\r\n", "application/warc-fields")]
    pages: dict[int, Path] = {}
    for i, page in enumerate(PAGES):
        uri = f"https://www.debian.org/doc/{i}/{page.name}"
        request = f"GET /doc/{i}/{page.name} HTTP/1.1\r\nHost: www.debian.org\r\n\r\n".encode()
        records.append(warc_record("request", uri, request, "application/http; msgtype=request"))
        body, extra = page.read_bytes(), []
        if i == 2:  # as a server sends it compressed and chunked
            body = _chunked(gzip.compress(body, mtime=0))
            extra = [("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")]
        pages[len(records)] = page
        records.append(
            warc_record("response", uri, http_response(body, HTML_TYPE, extra), HTTP_RESPONSE)
        )
    changelog = gzip.decompress(CHANGELOG.read_bytes())
    records.append(
        warc_record(
            "response",
            "https://www.debian.org/changelog.txt",
            http_response(changelog, "text/plain; charset=utf-8"),
            HTTP_RESPONSE,
        )
    )
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    records.append(
        warc_record(
            "response",
            "https://www.debian.org/logo.png",
            http_response(png, "image/png"),
            HTTP_RESPONSE,
        )
    )
    records.append(
        warc_record(
            "metadata",
            "https://www.debian.org/logo.png",
            b"fetchTimeMs: 12\r\n",
            "application/warc-fields",
        )
    )
    last = PAGES[0]
    pages[len(records)] = last
    records.append(
        warc_record(
            "response",
            "https://www.debian.org/doc/last.html",
            http_response(last.read_bytes(), HTML_TYPE),
            HTTP_RESPONSE,
        )
    )
    return records, pages


def truncated_warc(gz: bool) -> tuple[bytes, dict[int, Path]]:
    """The WARC with its last record cut in the middle of its HTML body."""
    records, pages = build_records()
    data = write_warc(records, gz)
    last_size = len(gzip.compress(records[-1], mtime=0)) if gz else len(records[-1])
    return data[: len(data) - last_size // 2], pages


def _warcio_documents(path: Path) -> list[tuple[int, str]]:
    """(offset, text) of the HTML records as the previous reader (warcio) read them."""
    from warcio.archiveiterator import ArchiveIterator

    out = []
    with open(path, "rb") as fh:
        for index, rec in enumerate(ArchiveIterator(fh)):
            ctype = rec.http_headers.get_header("Content-Type", "") if rec.http_headers else ""
            if rec.rec_type == "response" and ctype.startswith("text/html"):
                text = extract_html(decode_text(rec.content_stream().read()))
                out.append((index, text))
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_fastwarc_reads_real_pages_and_quarantines_truncated(tmp_path: Path, gz: bool) -> None:
    data, pages = truncated_warc(gz)
    path = tmp_path / ("debian.warc.gz" if gz else "debian.warc")
    path.write_bytes(data)
    (f,) = list_inputs([InputSpec(path=str(path))])
    r = extract_part([f])
    _balanced(r)
    last = max(pages)
    kept = dict(zip(r.kept["offset"].to_pylist(), r.kept["text"].to_pylist(), strict=True))
    # every complete HTML page: its own text, under the id of its record index
    for index, page in pages.items():
        if index != last:
            assert kept[index] == extract_html(decode_text(page.read_bytes())), page.name
    assert r.kept["id"].to_pylist() == [doc_id(f.name, o) for o in kept]
    changelog = last - 3
    assert kept[changelog].startswith("debian-reference")
    assert set(kept) == set(pages) - {last} | {changelog}
    # the record cut short: quarantined as truncated, not kept as half a page
    assert r.quarantine["offset"].to_pylist() == [last]
    assert r.quarantine["reason"].to_pylist() == ["truncated"]
    assert "bytes: file ends" in r.quarantine["detail"][0].as_py()
    assert r.removed["offset"].to_pylist() == [last - 2]  # the PNG
    assert r.removed["reason"].to_pylist() == ["unsupported_type"]
    assert r.counters["warc_records"] == len(pages) + 2
    assert r.counters["warc_records_skipped"] == 1 + len(PAGES) + 1

    # the same documents as the warcio reader gave (its complete HTML records)
    old = [(o, t) for o, t in _warcio_documents(path) if o != last]
    assert old == [(o, kept[o]) for o in sorted(set(pages) - {last})]


def test_complete_file_keeps_every_page(tmp_path: Path) -> None:
    records, pages = build_records()
    path = tmp_path / "debian.warc.gz"
    path.write_bytes(write_warc(records, gzip=True))
    r = extract_part(list_inputs([InputSpec(path=str(path))]))
    _balanced(r)
    assert r.quarantine.num_rows == 0
    assert set(pages) <= set(r.kept["offset"].to_pylist())


def test_http_headers_give_charset_and_type(tmp_path: Path) -> None:
    """A Latin-1 page without its own declaration decodes by the HTTP charset; a record whose
    Content-Length is not a number stops the file with warc_error after the good record."""
    body = "<html><body><p>Größe der Partition: über 10 GiB, später mehr.</p></body></html>"
    good = warc_record(
        "response",
        "https://www.debian.org/de.html",
        http_response(body.encode("latin-1"), "text/html; charset=ISO-8859-1"),
        HTTP_RESPONSE,
    )
    broken = b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: nope\r\n\r\n<html>\r\n\r\n"
    path = tmp_path / "latin1.warc"
    path.write_bytes(good + broken)
    r = extract_part(list_inputs([InputSpec(path=str(path))]))
    _balanced(r)
    assert r.kept["text"].to_pylist() == ["Größe der Partition: über 10 GiB, später mehr."]
    assert r.quarantine["reason"].to_pylist() == ["warc_error"]


def test_records_written_are_valid_warc() -> None:
    """The writer's records parse with warcio too (a second, independent reader)."""
    from warcio.archiveiterator import ArchiveIterator

    records, pages = build_records()
    types = [r.rec_type for r in ArchiveIterator(io.BytesIO(write_warc(records, gzip=True)))]
    assert len(types) == len(records)
    assert types[0] == "warcinfo" and all(types[i] == "response" for i in pages)


def test_fsspec_url_reads_like_a_local_file(tmp_path: Path) -> None:
    """A WARC behind an fsspec URL (streamed through a Python file object) gives the same
    documents as the local file (read by FastWARC's own file reader)."""
    import fsspec

    data, _ = truncated_warc(gz=True)
    local = tmp_path / "debian.warc.gz"
    local.write_bytes(data)
    url = "memory://h8-warc/debian.warc.gz"
    with fsspec.open(url, "wb") as fh:
        fh.write(data)
    a = extract_part(list_inputs([InputSpec(path=str(local))]))
    b = extract_part(list_inputs([InputSpec(path=url)]))
    assert a.kept["text"].to_pylist() == b.kept["text"].to_pylist()
    assert a.kept["offset"].to_pylist() == b.kept["offset"].to_pylist()
    assert b.quarantine["reason"].to_pylist() == ["truncated"]


def test_arc_files_are_named_not_misread(tmp_path: Path) -> None:
    """ARC (WARC's predecessor) is not read by FastWARC: one unsupported_format record."""
    path = tmp_path / "old-crawl.arc"
    path.write_bytes(b"filedesc://old-crawl.arc 0.0.0.0 20050101000000 text/plain 76\n")
    r = extract_part(list_inputs([InputSpec(path=str(path))]))
    _balanced(r)
    assert r.quarantine["reason"].to_pylist() == ["unsupported_format"]
