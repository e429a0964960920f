"""WARC files → document payloads, streamed with FastWARC (gzip members, plain or compressed).

:func:`warc_payloads` walks every record of a ``.warc``/``.warc.gz`` file in order (the record
index is the document offset, all record types counted), and yields a :class:`WarcPayload` for
each ``response``/``resource``/``conversion`` record (``DOCUMENT_TYPES``); the other types
(``request``, ``warcinfo``, ``metadata``, ``revisit``, ...) are counted as
``warc_records_skipped`` without reading their bodies. For HTTP records the HTTP headers are
parsed for the content type and charset, and the payload is decoded from its
``Transfer-Encoding: chunked`` and ``Content-Encoding`` (gzip, deflate, br), never past
``max_bytes``. Non-HTTP records take the WARC ``Content-Type``.

A record is never cut: one whose block ends before its ``Content-Length`` (a truncated file or
gzip member) is quarantined as ``truncated``; over ``max_bytes`` as ``too_large``; a payload that
does not decode as ``corrupt_gzip``/``warc_error``. A broken record header stops the file with
:class:`ReadError` ``warc_error`` (where the next record starts is unknown). ARC files (WARC's
predecessor) are not read (``unsupported_format``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fsspec

from curate.readers.text import ReadError, bounded_gunzip

_DOC_TYPE_NAMES = ("response", "resource", "conversion")


@dataclass
class WarcPayload:
    """One document record: its index in the file and its decoded payload, or why not."""

    index: int
    content_type: str = ""  # MIME type, lower case, without parameters ('' when none)
    charset: str | None = None  # from the HTTP Content-Type, when given
    payload: bytes = b""
    reason: str | None = None  # quarantine reason when the record is unreadable
    detail: str = ""


def warc_payloads(
    url: str, max_bytes: int, count: Callable[[str], None] = lambda name: None
) -> Iterator[WarcPayload]:
    """Document records of the WARC file at ``url`` (module doc); ``count`` gets
    ``warc_records`` per document record and ``warc_records_skipped`` per other record."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    name = url.rsplit("/", 1)[-1].lower()
    if name.endswith((".arc", ".arc.gz")):
        raise ReadError("unsupported_format", "ARC file (pre-WARC); convert it to WARC first")
    doc_types = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion
    local = "://" not in url or url.startswith("file://")
    with (
        contextlib.nullcontext(url.removeprefix("file://"))
        if local
        else fsspec.open(url, "rb") as source
    ):
        records = ArchiveIterator(
            source,
            record_types=WarcRecordType.any_type,
            parse_http=False,  # only document records' HTTP headers are parsed
            fsspec_args=False,
        )
        index = -1
        try:
            for index, record in enumerate(records):
                if not record.record_type & doc_types:
                    count("warc_records_skipped")
                    continue
                count("warc_records")
                yield _payload(index, record, max_bytes)
        except OSError as e:  # FastWARC: a record header it cannot parse
            raise ReadError("warc_error", f"record {index + 1}: {e}") from e


def _payload(index: int, record: object, max_bytes: int) -> WarcPayload:
    rec = record  # fastwarc.warc.WarcRecord
    declared = rec.headers.get("Content-Length")  # type: ignore[attr-defined]
    if declared is None or not declared.strip().isdigit():
        raise ReadError("warc_error", f"record {index}: Content-Length {declared!r}")
    if int(declared) > max_bytes:
        return WarcPayload(index, reason="too_large", detail=f"WARC record of {declared} bytes")
    try:
        http = rec.is_http  # type: ignore[attr-defined]
        if http:
            rec.parse_http(auto_decode="none")  # type: ignore[attr-defined]
            ctype = rec.http_content_type or ""  # type: ignore[attr-defined]
            charset = rec.http_charset  # type: ignore[attr-defined]
        else:
            ctype = rec.headers.get("Content-Type") or ""  # type: ignore[attr-defined]
            charset = None
        expected = rec.content_length  # type: ignore[attr-defined]  # body left to read
        raw = rec.reader.read(expected)  # type: ignore[attr-defined]
    except OSError as e:
        return WarcPayload(index, reason="warc_error", detail=f"{type(e).__name__}: {e}")
    ctype = ctype.split(";")[0].strip().lower()
    if len(raw) < expected:
        return WarcPayload(
            index, ctype, reason="truncated", detail=f"{len(raw)} of {expected} bytes: file ends"
        )
    try:
        payload = _decode_http(rec.http_headers, raw, max_bytes) if http else raw  # type: ignore[attr-defined]
    except ReadError as e:
        return WarcPayload(index, ctype, reason=e.reason, detail=e.detail)
    return WarcPayload(index, ctype, charset, payload)


def _decode_http(headers: object, body: bytes, max_bytes: int) -> bytes:
    """The HTTP payload without its transfer and content encodings (bounded by ``max_bytes``)."""
    from fastwarc.stream_io import BrotliReader, ChunkedReader

    def header(name: str) -> str:
        return (headers.get(name) or "").strip().lower() if headers is not None else ""  # type: ignore[attr-defined]

    try:
        if "chunked" in header("Transfer-Encoding"):
            body = _bounded_read(ChunkedReader(io.BytesIO(body)), max_bytes)
        encoding = header("Content-Encoding")
        if encoding in ("gzip", "x-gzip", "deflate"):
            return bounded_gunzip(body, max_bytes)
        if encoding == "br":
            return _bounded_read(BrotliReader(io.BytesIO(body)), max_bytes)
    except OSError as e:
        raise ReadError("warc_error", f"HTTP payload: {e}") from None
    return body


def _bounded_read(reader: object, max_bytes: int) -> bytes:
    data = reader.read(max_bytes + 1)  # type: ignore[attr-defined]
    if len(data) > max_bytes:
        raise ReadError("too_large", f"payload decodes to more than {max_bytes} bytes")
    return data


# --- writing: WARC files of real pages, for tests and benchmarks ---------------------------------

_HTTP_DATE = "Tue, 01 Dec 2026 12:00:00 GMT"
_WARC_DATE = "2026-12-01T12:00:00Z"


def http_response(
    body: bytes, content_type: str, extra: list[tuple[str, str]] | None = None
) -> bytes:
    """An HTTP/1.1 200 response with the headers a Debian Apache web server sends."""
    headers = [
        ("Date", _HTTP_DATE),
        ("Server", "Apache"),
        ("Last-Modified", "Sat, 14 Nov 2026 09:30:00 GMT"),
        ("ETag", f'"{len(body):x}-5f0c2a1e"'),
        ("Accept-Ranges", "bytes"),
        ("Vary", "Accept-Encoding"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Type", content_type),
        *(extra or []),
    ]
    if not any(k.lower() == "transfer-encoding" for k, _ in headers):
        headers.append(("Content-Length", str(len(body))))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"HTTP/1.1 200 OK\r\n{head}\r\n".encode("latin-1") + body


def warc_record(
    record_type: str,
    uri: str,
    block: bytes,
    content_type: str,
    identified_type: str | None = None,
) -> bytes:
    """One serialised WARC/1.1 record (FastWARC's writer; id and date derived from the URI);
    ``identified_type``: its ``WARC-Identified-Payload-Type`` (as Common Crawl writes it)."""
    import uuid

    from fastwarc.warc import WarcRecord, WarcRecordType

    rec = WarcRecord()
    urn = f"uuid:{uuid.uuid5(uuid.NAMESPACE_URL, record_type + ':' + uri)}"
    rec.init_headers(record_type=getattr(WarcRecordType, record_type), record_urn=urn.encode())
    rec.headers.set("WARC-Date", _WARC_DATE)
    if uri:
        rec.headers.append("WARC-Target-URI", uri)
    rec.headers.append("Content-Type", content_type)
    if identified_type:
        rec.headers.append("WARC-Identified-Payload-Type", identified_type)
    rec.set_bytes_content(block)
    out = io.BytesIO()
    rec.write(out)
    return out.getvalue()


def write_warc(records: list[bytes], gzip: bool) -> bytes:
    """A WARC file of serialised records; ``gzip``: one gzip member per record (as crawlers
    write them, so a reader can seek to any record)."""
    import gzip as gz

    if not gzip:
        return b"".join(records)
    return b"".join(gz.compress(r, compresslevel=6, mtime=0) for r in records)
