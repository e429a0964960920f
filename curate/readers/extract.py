"""The ``extract`` stage: raw input files of one part → documents of ``DOC_SCHEMA``.

Documents and offsets (``id = doc_id(source, offset)``, ``source`` = the file's source: its
path as written in the config, see :mod:`curate.readers.files`; files are read from ``url``):

- ``html``, ``code``, ``text``: one document per file, offset 0. An HTML page that is a later
  section of a multi-page document (DocBook, Sphinx, Texinfo ``<link rel>`` navigation) keeps
  the document's start in ``meta`` (``{"section_of": href}``, :func:`curate.readers.html.section_of`),
  and a page with ``<pre>`` listings their line ranges (``code_lines``). ``.gz``/``.dz`` files (dictzip
  dictionaries, gzipped changelogs) are decompressed first, at most ``max_bytes``.
- ``pdf``: one document per file, pages joined by a blank line (see :mod:`curate.readers.pdf`).
- ``fortune``: one document per entry (text between ``%`` lines); offset = entry index.
- ``dictd``: a dictd dictionary (``.dict``/``.dict.dz``) cut into entries
  (:func:`curate.readers.text.split_dictd`: a headword at the start of a line after a blank
  line), consecutive entries joined into documents of at least ``dict_block_chars`` characters
  (a single entry is mostly too short to be a training document); offset = the index of the
  document's first entry.
- ``warc``: one document per ``response``/``resource``/``conversion`` record, streamed with
  FastWARC (:mod:`curate.readers.warc`); offset = the record's index in the file (all record
  types counted, so offsets match the file). ``request``, ``warcinfo``, ``metadata`` and
  ``revisit`` records are not documents (counter ``warc_records_skipped``). HTML payloads go
  through the HTML extractor (``html.extractor``: trafilatura or resiliparse; the HTTP charset
  is used to decode), ``text/plain`` is decoded, PDF payloads go through pdfium; other content
  types are removed as ``unsupported_type``; a record cut short is quarantined as
  ``truncated``.
- ``jsonl``: one document per non-blank line (offset = line index), text from ``text_field``.
- ``parquet``: one document per row (offset = row index), text from ``text_field``.

Outcomes: a document with text is kept; blank text is removed as ``empty_text``, text shorter
than ``min_text_chars`` as ``too_short``. Unreadable input is quarantined with a reason:
``too_large`` (raw document, decompressed file or WARC/JSONL record over ``max_bytes``: never
truncated, since half a document is a worse training example than none; a container whose
decompressed records pass ``max_file_bytes``, checked first against a gzip file's declared size;
the rest of a part once its documents hold ``max_part_bytes`` of text), ``invalid_unicode``
(a JSONL string with a lone surrogate escape such as ``"\\ud800"``: not encodable as UTF-8),
``binary_file``,
``invalid_utf8``, ``mixed_encoding``, ``corrupt_gzip``, ``corrupt_pdf``, ``encrypted_pdf``,
``not_pdf``, ``timeout``, ``out_of_memory``, ``extract_crash``, ``extract_error``,
``truncated`` (a WARC record that ends before its Content-Length), ``warc_error``,
``invalid_json`` (also a line nested too deeply to parse: that line only), ``missing_text_field``, ``corrupt_parquet``, ``read_error``.
A container (WARC, JSONL, Parquet) that breaks midway keeps the records read so far and adds
one quarantine record at the offset where it broke. Nothing raises for bad input.

Counters: ``StageStats.docs_in`` counts documents seen (records), so in = kept + removed +
quarantined holds; ``bytes_in`` is the raw bytes of the part's files (the funnel's start). The
extra counters of :class:`ExtractResult` (``counters``) are plain ints for the flow to add
across parts (a key may be missing when its count is zero): ``files``, ``raw_bytes``, ``html_docs``,
``html_sections`` (pages with ``section_of``), ``html_code_lines`` (lines from ``<pre>``), ``pdf_docs``,
``pdf_pages``, ``pdf_empty_pages`` (no text), ``pdf_scanned_pages`` (no text but an image),
``pdf_page_errors``, ``dictd_entries``, ``warc_records`` (document records), ``warc_records_skipped`` (request,
warcinfo, metadata, revisit), ``rot13_files``.

Runs anywhere: in the main thread, in threads, in a Ray task (the timeout lives in the worker
process, see :mod:`curate.readers.worker`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import fsspec
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curate.progress import progress
from curate.readers.files import InputFile
from curate.readers.html import HtmlOptions
from curate.readers.text import (
    DECODE_REASONS,
    ReadError,
    declared_charset,
    decode_text,
    group_entries,
    gzip_declared_size,
    looks_binary,
    looks_rot13,
    maybe_decompress,
    rot13,
    split_dictd,
    split_fortunes,
)
from curate.readers.warc import WarcPayload, warc_payloads
from curate.readers.worker import run_isolated, run_job
from curate.schema import CODE_LINES, DOC_SCHEMA, SECTION_OF, doc_id
from curate.stage import ERROR_COLUMN, StageResult, decide

STAGE = "extract"
MAX_TIMEOUT_S = 86_400.0  # one day: a longer (or infinite) timeout overflows select()
ROW_BYTES = 256  # memory of one record besides its text (counted against max_part_bytes)
PART_SCHEMA = DOC_SCHEMA.append(pa.field(ERROR_COLUMN, pa.string()))


class ExtractConfig(BaseModel):
    """Settings of the extract stage."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(
        20.0, gt=0, le=MAX_TIMEOUT_S, description="per document, HTML and PDF extraction"
    )
    max_bytes: int = Field(
        32 << 20, gt=0, description="per raw document or record; over → too_large"
    )
    max_file_bytes: int = Field(
        256 << 20,
        gt=0,
        description="decompressed bytes read from one JSONL/WARC/Parquet file; over → the rest "
        "of the file is one too_large record",
    )
    max_part_bytes: int = Field(
        256 << 20,
        gt=0,
        description="text (+ 256 bytes per record) held by one part (bounds memory); over → "
        "the rest of the file and the part's next files are too_large",
    )
    min_text_chars: int = Field(10, ge=0, description="shorter (non-blank) text → too_short")
    html: HtmlOptions = Field(
        HtmlOptions(),
        description="HTML extractor and its options; a name alone (trafilatura | resiliparse) "
        "picks the extractor with its defaults",
    )
    max_pdf_pages: int | None = Field(None, description="read at most this many pages per PDF")
    dict_block_chars: int = Field(
        1000, ge=0, description="dictd: entries per document until this many characters"
    )
    isolate: bool = Field(
        True,
        description="run the HTML extractor/pdfium in worker processes (timeout, memory limit)",
    )
    worker_memory_mb: int | None = Field(
        4096, description="address-space limit of a worker process (None: unlimited)"
    )


class FileOverCap(ReadError):
    """A file read past ``max_file_bytes``: stops the whole file, not one record."""


@dataclass
class ExtractResult(StageResult):
    """A :class:`StageResult` plus extra per-part counters (ints; add them across parts)."""

    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class _Record:
    offset: int
    text: str = ""
    reason: str | None = None  # quarantine reason
    detail: str = ""
    removed: str | None = None  # a readable record that is no document (removal reason)
    meta: str | None = None  # the record's other fields as a JSON object (JSONL, Parquet, HTML)


class _Part:
    """Accumulates the records of one part and its counters."""

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self.columns: dict[str, list] = {name: [] for name in PART_SCHEMA.names}
        self.removals: list[str | None] = []
        self.details: dict[str, str] = {}
        self.counters: dict[str, int] = {}
        self.held_bytes = 0  # text + per-record overhead held by the part (max_part_bytes)
        self.file_bytes = 0  # decompressed bytes read from the current file (max_file_bytes)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def read(self, n: int) -> None:
        """Count ``n`` decompressed bytes read from the current file; raises ``too_large``
        once the file passes ``max_file_bytes`` (the rest of it is not read)."""
        self.file_bytes += n
        if self.file_bytes > self.cfg.max_file_bytes:
            raise FileOverCap(
                "too_large",
                f"file decompresses to more than max_file_bytes {self.cfg.max_file_bytes}",
            )

    def add(self, f: InputFile, fmt: str, rec: _Record, bounded: bool = True) -> None:
        """Add a record; text that is not valid Unicode is quarantined (``invalid_unicode``).
        Raises ``too_large`` (``bounded``) when the part's rows would hold more than
        ``max_part_bytes``: text bytes plus ``ROW_BYTES`` per record."""
        n = 0
        if rec.reason is None and rec.text:
            try:
                n = len(rec.text) if rec.text.isascii() else len(rec.text.encode("utf-8"))
            except UnicodeEncodeError as e:
                detail = f"{e.reason} at character {e.start}"
                rec = _Record(rec.offset, reason="invalid_unicode", detail=detail)
        n += ROW_BYTES
        if bounded and self.held_bytes + n > self.cfg.max_part_bytes:
            raise ReadError(
                "too_large", f"the part's records pass max_part_bytes {self.cfg.max_part_bytes}"
            )
        self.held_bytes += n
        ident = doc_id(f.name, rec.offset)
        cols = self.columns
        cols["id"].append(ident)
        cols["text"].append(rec.text if rec.reason is None else "")
        cols["source"].append(f.name)
        cols["offset"].append(rec.offset)
        cols["domain"].append(f.domain)
        cols["format"].append(fmt)
        cols["lang"].append(None)
        cols["lang_score"].append(None)
        cols["meta"].append(rec.meta if rec.reason is None else None)
        cols[ERROR_COLUMN].append(rec.reason)
        self.removals.append(rec.removed)
        if rec.reason is not None and rec.detail:
            self.details[ident] = rec.detail[:500]

    # --- heavy extractors: in a worker process unless isolation is off -------------------

    def _job(self, kind: str, payload: object, options: object) -> object:
        if self.cfg.isolate:
            return run_isolated(
                kind, payload, options, self.cfg.timeout_s, self.cfg.worker_memory_mb
            )
        return run_job(kind, payload, options)

    def html(self, data: bytes, charset: str | None = None) -> tuple[str, str | None]:
        """The page's text and its ``meta`` (``section_of``: the multi-page document it is a
        later section of; ``code_lines``: lines from ``<pre>`` listings; see
        :mod:`curate.readers.html`); ``charset``: the one an HTTP header gave (else the page's
        own declaration)."""
        if looks_binary(data):
            raise ReadError("binary_file", "control bytes in an HTML file")
        # the worker decodes the bytes (sent as they are, not as a str pickled to UTF-8 again)
        declared = charset or declared_charset(data)
        try:
            page = self._job("html_page", (data, declared), self.cfg.html.model_dump())
        except ReadError as e:
            if e.reason not in DECODE_REASONS:  # a page that decoded counts as an HTML document
                self.count("html_docs")
            raise
        self.count("html_docs")
        text, document, listings = page  # type: ignore[misc]
        meta: dict[str, object] = {}
        if document is not None:
            meta[SECTION_OF] = document
            self.count("html_sections")
        if listings:
            meta[CODE_LINES] = listings
            self.count("html_code_lines", sum(end - start for start, end in listings))
        return text, _meta(meta)

    def pdf(self, data: bytes) -> str:
        result = self._job("pdf", data, self.cfg.max_pdf_pages)
        self.count("pdf_docs")
        self.count("pdf_pages", result.pages)  # type: ignore[attr-defined]
        self.count("pdf_empty_pages", result.empty_pages)  # type: ignore[attr-defined]
        self.count("pdf_scanned_pages", result.scanned_pages)  # type: ignore[attr-defined]
        self.count("pdf_page_errors", result.page_errors)  # type: ignore[attr-defined]
        return result.text  # type: ignore[attr-defined]

    def plain(self, data: bytes) -> str:
        if looks_binary(data):
            raise ReadError("binary_file", "NUL or control bytes")
        return decode_text(data)


def _read_all(f: InputFile, cfg: ExtractConfig) -> bytes:
    if f.size > cfg.max_bytes:
        raise ReadError("too_large", f"{f.size} bytes > max_bytes {cfg.max_bytes}")
    with fsspec.open(f.url, "rb") as fh:
        data = fh.read(cfg.max_bytes + 1)
    if len(data) > cfg.max_bytes:
        raise ReadError("too_large", f"more than max_bytes {cfg.max_bytes}")
    return data


def _single(part: _Part, f: InputFile) -> Iterator[_Record]:
    data = maybe_decompress(f.url, _read_all(f, part.cfg), part.cfg.max_bytes)
    meta = None
    if f.format == "html":
        text, meta = part.html(data)
    elif f.format == "pdf":
        text = part.pdf(data)
    else:
        text = part.plain(data)
    yield _Record(0, text, meta=meta)


def _fortunes(part: _Part, f: InputFile) -> Iterator[_Record]:
    data = maybe_decompress(f.url, _read_all(f, part.cfg), part.cfg.max_bytes)
    text = part.plain(data)
    if f.rot13 or (f.rot13 is None and looks_rot13(text)):
        text = rot13(text)
        part.count("rot13_files")
    for i, entry in enumerate(split_fortunes(text)):
        yield _Record(i, entry)


def _dictd(part: _Part, f: InputFile) -> Iterator[_Record]:
    data = maybe_decompress(f.url, _read_all(f, part.cfg), part.cfg.max_bytes)
    entries = split_dictd(part.plain(data))
    part.count("dictd_entries", len(entries))
    for offset, text in group_entries(entries, part.cfg.dict_block_chars):
        yield _Record(offset, text)


def _warc(part: _Part, f: InputFile) -> Iterator[_Record]:
    for rec in warc_payloads(f.url, part.cfg.max_bytes, part.count):
        part.read(len(rec.payload))  # max_file_bytes: raises for the rest of the file
        yield _warc_record(part, rec)


def _warc_record(part: _Part, rec: WarcPayload) -> _Record:
    """One WARC document record → text by its content type (see :mod:`curate.readers.warc`)."""
    if rec.reason is not None:
        return _Record(rec.index, reason=rec.reason, detail=rec.detail)
    ctype = rec.content_type
    meta = None
    try:
        if ctype in ("text/html", "application/xhtml+xml", "") or ctype.endswith("+xml"):
            text, meta = part.html(rec.payload, rec.charset)
        elif ctype == "application/pdf":
            text = part.pdf(rec.payload)
        elif ctype.startswith("text/"):
            text = part.plain(rec.payload)
        else:
            return _Record(rec.index, removed="unsupported_type")
    except ReadError as e:
        return _Record(rec.index, reason=e.reason, detail=e.detail)
    return _Record(rec.index, text, meta=meta)


def _jsonl(part: _Part, f: InputFile) -> Iterator[_Record]:
    declared = gzip_declared_size(f.url) if f.url.endswith(".gz") else None
    if declared is not None and declared > part.cfg.max_file_bytes:
        raise ReadError(
            "too_large",
            f"gzip declares {declared} bytes > max_file_bytes {part.cfg.max_file_bytes}",
        )
    with fsspec.open(f.url, "rb", compression="infer") as fh:
        for i, line in enumerate(_bounded_lines(fh, part.cfg.max_bytes, part.read)):
            if line is None:
                yield _Record(i, reason="too_large", detail="line over max_bytes")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                yield _Record(i, reason="invalid_json", detail=str(e))
                continue
            except RecursionError:
                yield _Record(i, reason="invalid_json", detail="nested too deeply to parse")
                continue
            if not isinstance(obj, dict):
                yield _field_record(i, KeyError, f)
                continue
            rec = _field_record(i, obj.get(f.text_field, KeyError), f)
            rec.meta = _meta({k: v for k, v in obj.items() if k != f.text_field})
            yield rec


def _bounded_lines(
    fh: IO[bytes], max_bytes: int, read: Callable[[int], None]
) -> Iterator[bytes | None]:
    """Lines of a binary stream; ``None`` for a line longer than ``max_bytes`` (skipped).
    ``read`` is told the size of every chunk read (it raises to stop)."""
    while True:
        line = fh.readline(max_bytes + 1)
        if not line:
            return
        read(len(line))
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = fh.readline(1 << 20)
                read(len(line))
            yield None
            continue
        yield line


def _meta(fields: dict[str, object]) -> str | None:
    """A record's fields besides its text, as the ``meta`` column's JSON (None when none)."""
    if not fields:
        return None
    return json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)


def _field_record(offset: int, value: object, f: InputFile) -> _Record:
    if value is KeyError:
        return _Record(offset, reason="missing_text_field", detail=f"no {f.text_field!r}")
    if value is None:
        return _Record(offset, "")
    if not isinstance(value, str):
        return _Record(offset, reason="missing_text_field", detail=f"{type(value).__name__} text")
    return _Record(offset, value)


def _parquet(part: _Part, f: InputFile) -> Iterator[_Record]:
    import pyarrow.parquet as pq

    with fsspec.open(f.url, "rb") as fh:
        try:
            pf = pq.ParquetFile(fh)
        except Exception as e:  # noqa: BLE001
            raise ReadError("corrupt_parquet", str(e)) from e
        if f.text_field not in pf.schema_arrow.names:
            raise ReadError("missing_text_field", f"no column {f.text_field!r}")
        offset = 0
        try:
            for batch in pf.iter_batches(batch_size=1024):
                part.read(batch.nbytes)
                texts = batch.column(f.text_field).to_pylist()
                others = batch.drop_columns([f.text_field]).to_pylist()
                for value, fields in zip(texts, others, strict=True):
                    rec = _field_record(offset, value, f)
                    rec.meta = _meta(fields)
                    yield rec
                    offset += 1
        except ReadError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ReadError("corrupt_parquet", f"row {offset}: {e}") from e


_READERS = {
    "html": _single,
    "pdf": _single,
    "code": _single,
    "text": _single,
    "fortune": _fortunes,
    "dictd": _dictd,
    "warc": _warc,
    "jsonl": _jsonl,
    "parquet": _parquet,
}


def _extract_file(part: _Part, f: InputFile) -> None:
    """Add every record of ``f``; a failure adds one quarantine record where it happened."""
    fmt = f.format
    next_offset = 0
    part.file_bytes = 0
    try:
        reader = _READERS.get(fmt)
        if reader is None:
            raise ReadError("unsupported_format", fmt)
        if part.held_bytes + ROW_BYTES > part.cfg.max_part_bytes:  # full: not even read
            raise ReadError(
                "too_large", f"the part passed max_part_bytes {part.cfg.max_part_bytes}"
            )
        for rec in reader(part, f):
            part.add(f, fmt, rec)
            next_offset = rec.offset + 1
    except ReadError as e:
        part.add(f, fmt, _Record(next_offset, reason=e.reason, detail=e.detail), bounded=False)
    except Exception as e:  # noqa: BLE001 - a reader bug or odd input: a reason, not a crash
        detail = f"{type(e).__name__}: {e}"
        part.add(f, fmt, _Record(next_offset, reason="read_error", detail=detail), bounded=False)


def extract_part(files: list[InputFile], cfg: ExtractConfig | None = None) -> ExtractResult:
    """Extract every file of a part (in the given order) into one :class:`ExtractResult`."""
    cfg = cfg or ExtractConfig()
    start = time.perf_counter()
    part = _Part(cfg)
    for f in progress(files, "extract", unit="file"):
        part.count("files")
        part.count("raw_bytes", f.size)
        _extract_file(part, f)

    texts = part.columns["text"]  # still Python strings: no conversion back from Arrow
    stripped = np.fromiter(map(len, map(str.strip, texts)), np.int64, len(texts))
    table = pa.Table.from_pydict(part.columns, schema=PART_SCHEMA)
    part.columns.clear()
    removals = np.array(part.removals, dtype=object)
    rules = {
        **{r: removals == r for r in sorted({r for r in part.removals if r is not None})},
        "empty_text": stripped == 0,
        "too_short": stripped < cfg.min_text_chars,
    }
    result = decide(table, rules, STAGE)
    q = result.quarantine
    if q.num_rows:
        details = [part.details.get(i) for i in q["id"].to_pylist()]
        q = q.set_column(
            q.schema.get_field_index("detail"), "detail", pa.array(details, pa.string())
        )
    result.stats.bytes_in = part.counters.get("raw_bytes", 0)
    result.stats.seconds = time.perf_counter() - start
    return ExtractResult(
        kept=result.kept,
        removed=result.removed,
        quarantine=q,
        stats=result.stats,
        counters=dict(sorted(part.counters.items())),
    )
