"""The extract stage on the real Debian sample: every format, WARC round trip, JSONL/Parquet,
memory:// URLs, determinism, counters, quarantine reasons, per-document timeout."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.readers import ExtractConfig, InputFile, InputSpec, extract_part, list_inputs
from curate.readers.html import code_lines, extract_html, extract_page, section_of
from curate.readers.text import decode_text
from curate.schema import DOC_SCHEMA, QUARANTINE_SCHEMA, doc_id
from tests.bad_inputs import (
    EURO_PDF,
    encrypted_pdf,
    huge_html,
    sprinkle_invalid_bytes,
    truncated_pdf,
)

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
REFERENCE = SAMPLE / "html"
LANG_PAGES = {
    lang: REFERENCE / f"debian-reference-{lang}/usr/share/debian-reference/ch08.{lang}.html"
    for lang in ("en", "es", "it", "pt", "ja", "zh-cn")
}
ES_OFF = SAMPLE / "fortune/fortunes-es-off"


@pytest.fixture(scope="module")
def sample_result():
    return extract_part(list_inputs([InputSpec(path=str(SAMPLE))]))


def _docs(result, **where):
    rows = result.kept.to_pylist()
    return [r for r in rows if all(where[k] in r[k] for k in where)]


def _balanced(result) -> None:
    s = result.stats
    assert s.docs_in == s.kept + s.removed_total + s.quarantined_total
    assert s.kept == result.kept.num_rows
    assert s.removed_total == result.removed.num_rows
    assert s.quarantined_total == result.quarantine.num_rows


def test_sample_extracts_every_format(sample_result) -> None:
    r = sample_result
    _balanced(r)
    assert r.kept.schema == DOC_SCHEMA
    assert r.quarantine.schema == QUARANTINE_SCHEMA
    assert r.quarantine.num_rows == 0  # the real sample is clean
    assert set(r.kept["format"].to_pylist()) == {"html", "pdf", "code", "text", "fortune", "dictd"}
    assert len(set(r.kept["id"].to_pylist())) == r.kept.num_rows
    for row in r.kept.to_pylist()[:: max(1, r.kept.num_rows // 200)]:
        assert row["id"] == doc_id(row["source"], row["offset"])
        assert row["text"].strip() and "\ufffd" not in row["text"]
    assert r.counters["files"] == len(list_inputs([InputSpec(path=str(SAMPLE))]))
    assert r.stats.bytes_in == r.counters["raw_bytes"] > 7_000_000


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("en", ["locale", "Internationalization"]),
        ("es", ["la", "de"]),
        ("it", ["di", "per"]),
        ("pt", ["de", "para"]),
        ("ja", ["ロケール"]),
        ("zh-cn", ["语言"]),
    ],
)
def test_html_reference_pages(sample_result, lang: str, words: list[str]) -> None:
    (doc,) = _docs(sample_result, source=str(LANG_PAGES[lang]))
    text = doc["text"]
    assert 3000 < len(text) < len(LANG_PAGES[lang].read_text()) / 2  # boilerplate/markup gone
    assert "<div" not in text and "</" not in text
    assert all(w in text for w in words)
    assert doc["domain"] == "web" and doc["format"] == "html" and doc["offset"] == 0


def test_python_docs_keep_code_examples(sample_result) -> None:
    (doc,) = _docs(sample_result, source="tutorial/errors.html")
    assert "Errors and Exceptions" in doc["text"]
    assert "ZeroDivisionError" in doc["text"] and "try:" in doc["text"]


HANDBOOK = REFERENCE / "debian-handbook/usr/share/doc/debian-handbook/html"


def test_a_book_section_page_names_its_document_and_listings(sample_result) -> None:
    """DocBook and Sphinx pages link the previous page and the book's start: the reader keeps
    the start in ``meta``; a book's front page (no previous page) and a paginated listing
    (prev/next, nothing naming a whole document) are documents of their own. The lines of the
    page's <pre> listings are in ``meta`` too."""
    page = HANDBOOK / "en-US/sect.backup.html"
    (doc,) = _docs(sample_result, source=str(page))
    assert json.loads(doc["meta"])["section_of"] == "index.html"
    (sphinx,) = _docs(sample_result, source="tutorial/errors.html")
    assert json.loads(sphinx["meta"])["section_of"]
    html = page.read_text("utf-8")
    assert section_of(html) == "index.html"
    assert section_of(re.sub(r'<link rel="prev"[^>]*>', "", html)) is None  # a front page
    assert section_of(re.sub(r'<link rel="(home|up)"[^>]*>', "", html)) is None  # a listing
    # its <pre> listing (a dirvish configuration): line ranges of the text, prose lines outside
    lines = doc["text"].split("\n")
    ranges = json.loads(doc["meta"])["code_lines"]
    listed = {line for start, end in ranges for line in lines[start:end]}
    assert "expire-default: +15 days" in listed and "client: rivendell.falcot.com" in listed
    assert not any("backup" in line.lower() and line.endswith(".") for line in listed)
    html_docs = sample_result.counters["html_docs"]
    assert sample_result.counters["html_sections"] == html_docs == 70  # every sample page


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
def test_extract_page_is_text_section_and_listings_at_once(extractor: str) -> None:
    """The worker's one call per page gives what the three functions give apart, on real pages
    with and without <pre> listings and with an upper-case <PRE>."""
    pages = sorted((SAMPLE / "html").rglob("*.html"))[:12]
    pages += [HANDBOOK / "en-US/sect.backup.html"]
    listed = 0
    for path in pages:
        for html in (path.read_text("utf-8"), path.read_text("utf-8").replace("<pre", "<PRE")):
            text = extract_html(html, {"extractor": extractor})
            listings = code_lines(html, text)
            assert extract_page(html, {"extractor": extractor}) == (
                text, section_of(html), listings
            )  # fmt: skip
            listed += bool(listings)
    assert listed >= 4


def test_a_page_that_is_all_pre_is_a_document_not_a_listing() -> None:
    """A text shown in one <pre> (a changelog, a mail archive's message, a man page) is the
    page's prose: no listing ranges, so the rules judge its text as before."""
    import html as html_lib

    changelog = gzip.decompress((SAMPLE / "meta/python3.11-doc/changelog.Debian.gz").read_bytes())
    body = html_lib.escape(changelog.decode("utf-8")[:20_000])
    page = f"<html><head><title>changelog</title></head><body><pre>{body}</pre></body></html>"
    text = extract_html(page)
    assert len(text) > 5_000
    assert code_lines(page, text) == []
    # the same <pre> as a listing inside a page of prose is one
    prose = (HANDBOOK / "en-US/sect.backup.html").read_text("utf-8")
    mixed = prose.replace("</body>", f"<pre>{body[:2_000]}</pre></body>")
    assert code_lines(mixed, extract_html(mixed))


def test_pdfs_one_doc_per_file(sample_result) -> None:
    pdfs = _docs(sample_result, format="pdf")
    assert len(pdfs) == 3
    euro = next(d for d in pdfs if d["source"].endswith("euro.pdf"))
    assert "The euro package" in euro["text"] and "currency" in euro["text"]
    assert "\ufffe" not in euro["text"]
    assert sample_result.counters["pdf_pages"] == 15 + 4 + 6
    assert sample_result.counters["pdf_empty_pages"] == 0


def test_code_is_verbatim(sample_result) -> None:
    paths = [p for p in (SAMPLE / "code").rglob("*") if p.is_file()]
    assert len(paths) == 14
    for path in paths:
        (doc,) = [d for d in sample_result.kept.to_pylist() if d["source"] == str(path)]
        assert doc["text"] == path.read_text("utf-8")
        assert doc["domain"] == "code"


def test_fortunes_one_doc_per_entry_and_rot13(sample_result) -> None:
    science = SAMPLE / "fortune/fortunes/usr/share/games/fortunes/science"
    docs = _docs(sample_result, source=str(science))
    removed = [r for r in sample_result.removed.to_pylist() if r["source"] == str(science)]
    raw = science.read_text("utf-8")
    assert len(docs) + len(removed) == raw.count("\n%\n") + (not raw.endswith("%\n"))
    assert [d["offset"] for d in docs] == sorted(d["offset"] for d in docs)
    assert docs[0]["text"] == raw.split("\n%\n")[0].strip("\n")
    off = _docs(sample_result, source=str(ES_OFF))
    assert len(off) > 500
    words = " ".join(d["text"] for d in off).split()
    assert words.count("que") > 50 and words.count("de") > 50  # decoded, not ROT13
    assert sample_result.counters["rot13_files"] == 4
    explicit = extract_part(list_inputs([InputSpec(path=str(ES_OFF), rot13=False)]))
    assert " que " not in " ".join(explicit.kept["text"].to_pylist())


def test_dictd_dictionary_is_cut_into_entry_blocks(sample_result) -> None:
    docs = _docs(sample_result, source="devil.dict.dz")
    whole = gzip.decompress(
        (SAMPLE / "prose/dict-devil/usr/share/dictd/devil.dict.dz").read_bytes()
    ).decode()
    assert len(docs) > 200  # not one 383 KB document
    assert all(d["format"] == "dictd" and d["domain"] == "prose" for d in docs)
    assert all(len(d["text"]) >= 1000 for d in docs[:-1])  # blocks of >= dict_block_chars
    offsets = [d["offset"] for d in docs]
    assert offsets == sorted(offsets) and offsets[0] == 0 and len(set(offsets)) == len(offsets)
    assert sample_result.counters["dictd_entries"] > 900  # ~1000 headwords in the dictionary
    # every entry lands in exactly one block, whole and in file order: no text lost or cut
    assert "".join("".join(d["text"].split()) for d in docs) == "".join(whole.split())
    by_start = {d["text"].split()[0] for d in docs}
    assert "ABNORMAL," in " ".join(d["text"] for d in docs)
    assert not any(w[0].islower() for w in by_start)  # blocks start at a headword
    one_each = extract_part(
        list_inputs([InputSpec(path=str(SAMPLE / "prose"))]), ExtractConfig(dict_block_chars=0)
    )
    assert one_each.kept.num_rows == sample_result.counters["dictd_entries"]
    texts = one_each.kept["text"].to_pylist()
    abrupt = next(t for t in texts if t.startswith("ABRUPT, adj."))
    assert abrupt.endswith('"concatenated without abruption."') and "ABSCOND" not in abrupt


def test_determinism() -> None:
    files = list_inputs([InputSpec(path=str(SAMPLE / "html/debian-handbook"))])
    files += list_inputs([InputSpec(path=str(SAMPLE / "pdf"))])
    a, b = extract_part(files), extract_part(files)
    assert a.kept.equals(b.kept) and a.removed.equals(b.removed)
    assert a.quarantine.equals(b.quarantine)
    assert a.counters == b.counters
    assert a.stats.to_dict() | {"seconds": 0} == b.stats.to_dict() | {"seconds": 0}


def _write_warc(pages: list[Path], gzip: bool) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=gzip)
    writer.write_record(writer.create_warcinfo_record("sample.warc", {"software": "sluice-test"}))
    for i, page in enumerate(pages):
        uri = f"https://www.debian.org/doc/{i}/{page.name}"
        writer.write_record(writer.create_warc_record(uri, "request", payload=io.BytesIO(b"GET /")))
        http = StatusAndHeaders(
            "200 OK", [("Content-Type", "text/html; charset=UTF-8")], protocol="HTTP/1.1"
        )
        record = writer.create_warc_record(
            uri, "response", payload=io.BytesIO(page.read_bytes()), http_headers=http
        )
        writer.write_record(record)
    pdf_http = StatusAndHeaders("200 OK", [("Content-Type", "application/pdf")], "HTTP/1.1")
    writer.write_record(
        writer.create_warc_record(
            "https://x/euro.pdf",
            "response",
            payload=io.BytesIO(EURO_PDF.read_bytes()),
            http_headers=pdf_http,
        )
    )
    png_http = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], "HTTP/1.1")
    writer.write_record(
        writer.create_warc_record(
            "https://x/a.png", "response", payload=io.BytesIO(b"\x89PNG\r\n"), http_headers=png_http
        )
    )
    return buf.getvalue()


@pytest.mark.parametrize("gzip", [True, False])
def test_warc_round_trip(tmp_path: Path, gzip: bool) -> None:
    pages = sorted(LANG_PAGES.values())
    warc = tmp_path / ("sample.warc.gz" if gzip else "sample.warc")
    warc.write_bytes(_write_warc(pages, gzip))
    (f,) = list_inputs([InputSpec(path=str(warc))])
    assert f.format == "warc" and f.domain == "web"
    r = extract_part([f])
    _balanced(r)
    direct = extract_part(list_inputs([InputSpec(path=str(p)) for p in pages]))
    assert r.kept["text"].to_pylist()[: len(pages)] == direct.kept["text"].to_pylist()
    # records: warcinfo 0, then (request, response) per page, then pdf, png
    offsets = r.kept["offset"].to_pylist()
    assert offsets == [2 + 2 * i for i in range(len(pages))] + [1 + 2 * len(pages)]
    assert "The euro package" in r.kept["text"].to_pylist()[-1]
    assert r.removed["reason"].to_pylist() == ["unsupported_type"]
    assert r.counters["warc_records_skipped"] == 1 + len(pages)
    assert r.counters["pdf_pages"] == 15


def test_jsonl_and_parquet_inputs(tmp_path: Path) -> None:
    pages = list(LANG_PAGES.values())
    texts = [decode_text(p.read_bytes()) for p in pages]
    lines = [json.dumps({"text": t, "url": str(p)}) for t, p in zip(texts, pages, strict=True)]
    lines += ["", "{not json", json.dumps({"body": "x"}), json.dumps({"text": None})]
    lines += [json.dumps({"text": 42})]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    r = extract_part(list_inputs([InputSpec(path=str(tmp_path / "docs.jsonl"))]))
    _balanced(r)
    assert r.kept["text"].to_pylist() == texts
    assert r.kept["offset"].to_pylist() == list(range(len(texts)))
    q = dict(
        zip(r.quarantine["offset"].to_pylist(), r.quarantine["reason"].to_pylist(), strict=True)
    )
    n = len(texts)
    assert q == {n + 1: "invalid_json", n + 2: "missing_text_field", n + 4: "missing_text_field"}
    assert (
        r.removed["offset"].to_pylist() == [n + 3]
        and r.removed["reason"][0].as_py() == "empty_text"
    )

    table = pa.table({"content": texts, "n": list(range(len(texts)))})
    pq.write_table(table, tmp_path / "docs.parquet")
    pq.write_table(pa.table({"other": ["x"]}), tmp_path / "wrong.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    specs = [InputSpec(path=str(tmp_path), glob="*.parquet", text_field="content", domain="web")]
    r = extract_part(list_inputs(specs))
    _balanced(r)
    assert r.kept["text"].to_pylist() == texts
    assert set(r.kept["domain"].to_pylist()) == {"web"}
    assert sorted(r.quarantine["reason"].to_pylist()) == ["corrupt_parquet", "missing_text_field"]


def test_memory_url_extraction_matches_local() -> None:
    local = list_inputs([InputSpec(path=str(SAMPLE / "html/python3.11-doc"))])
    mem = fsspec.filesystem("memory")
    for f in local:
        mem.pipe(f"/extract-test/{f.url.rsplit('/', 1)[-1]}", Path(f.url).read_bytes())
    try:
        files = list_inputs([InputSpec(path="memory://extract-test")])
        assert len(files) == len(local)
        got = extract_part(files)
        want = extract_part(local)
        by_name = lambda r: {  # noqa: E731
            s.rsplit("/", 1)[-1]: t
            for s, t in zip(r.kept["source"].to_pylist(), r.kept["text"].to_pylist(), strict=True)
        }
        assert by_name(got) == by_name(want)
        assert all(s.startswith("memory://") for s in got.kept["source"].to_pylist())
    finally:
        mem.rm("/extract-test", recursive=True)


@pytest.mark.parametrize("isolate", [True, False])
def test_html_that_does_not_decode_is_quarantined_and_not_counted(
    tmp_path: Path, isolate: bool
) -> None:
    """The extraction worker decodes an HTML page's bytes: a page of UTF-8 and Latin-1 halves
    (``mixed_encoding``) and one with invalid bytes (``invalid_utf8``) come back with their
    decoding reason and detail, in a worker or in-process, and are not counted as HTML
    documents; a legacy-encoded page is decoded and extracted as before."""
    page = LANG_PAGES["pt"].read_text("utf-8").encode("latin-1", "replace").decode("latin-1")
    half = len(page) // 2
    (tmp_path / "mixed.html").write_bytes(page[:half].encode() + page[half:].encode("latin-1"))
    (tmp_path / "invalid.html").write_bytes(sprinkle_invalid_bytes(page.encode()))
    (tmp_path / "latin1.html").write_bytes(page.encode("latin-1"))
    cfg = ExtractConfig(isolate=isolate)
    r = extract_part(list_inputs([InputSpec(path=str(tmp_path))]), cfg)
    _balanced(r)
    reasons = dict(
        zip(
            [s.rsplit("/", 1)[-1] for s in r.quarantine["source"].to_pylist()],
            r.quarantine["reason"].to_pylist(),
            strict=True,
        )
    )
    assert reasons == {"mixed.html": "mixed_encoding", "invalid.html": "invalid_utf8"}
    assert all(r.quarantine["detail"].to_pylist())
    assert r.counters["html_docs"] == 1
    assert r.kept["text"][0].as_py() == extract_html(page)


def test_bad_files_get_quarantine_reasons(tmp_path: Path) -> None:
    cases = {
        "truncated.pdf": (truncated_pdf(), "corrupt_pdf"),
        "encrypted.pdf": (encrypted_pdf(), "encrypted_pdf"),
        "binary.html": ((SAMPLE / "meta/fortunes/changelog.gz").read_bytes()[10:], "binary_file"),
        "invalid.txt": (
            sprinkle_invalid_bytes(
                (SAMPLE / "code/libpython3.11-stdlib/usr/lib/python3.11/shlex.py").read_bytes()
            ),
            "invalid_utf8",
        ),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "good.html").write_bytes(LANG_PAGES["en"].read_bytes())
    r = extract_part(list_inputs([InputSpec(path=str(tmp_path))]))
    _balanced(r)
    got = {
        s.rsplit("/", 1)[-1]: reason
        for s, reason in zip(
            r.quarantine["source"].to_pylist(), r.quarantine["reason"].to_pylist(), strict=True
        )
    }
    assert got == {name: reason for name, (_, reason) in cases.items()}
    assert all(d for d in r.quarantine["detail"].to_pylist())
    assert r.kept["source"].to_pylist() == [str(tmp_path / "good.html")]


def test_min_chars_and_too_large(tmp_path: Path) -> None:
    (tmp_path / "short.txt").write_text("tiny\n")
    (tmp_path / "big.txt").write_bytes(b"word " * 50_000)
    (tmp_path / "ok.txt").write_text("long enough text\n")
    r = extract_part(list_inputs([InputSpec(path=str(tmp_path))]), ExtractConfig(max_bytes=100_000))
    _balanced(r)
    assert r.removed["reason"].to_pylist() == ["too_short"]
    assert r.quarantine["reason"].to_pylist() == ["too_large"]
    assert r.kept.num_rows == 1


def _slow_page(tmp_path: Path) -> InputFile:
    """The real English reference page repeated to 4 MiB: trafilatura needs seconds on it."""
    path = tmp_path / "slow.html"
    path.write_bytes(huge_html(4 << 20))
    (f,) = list_inputs([InputSpec(path=str(path))])
    return f


@pytest.mark.timeout(120)
def test_timeout_on_pathological_page_main_thread(tmp_path: Path) -> None:
    slow = _slow_page(tmp_path)
    (good,) = list_inputs([InputSpec(path=str(LANG_PAGES["it"]))])
    start = time.monotonic()
    r = extract_part([slow, good], ExtractConfig(timeout_s=0.5))
    assert time.monotonic() - start < 30
    assert r.quarantine["reason"].to_pylist() == ["timeout"]
    assert r.kept["source"].to_pylist() == [good.url]  # a fresh worker took the next page
    assert r.kept["text"][0].as_py() == extract_html(LANG_PAGES["it"].read_text(), {})


@pytest.mark.timeout(120)
def test_timeout_in_threads(tmp_path: Path) -> None:
    slow = _slow_page(tmp_path)
    (good,) = list_inputs([InputSpec(path=str(LANG_PAGES["pt"]))])
    cfg = ExtractConfig(timeout_s=0.5)
    names: set[str] = set()

    def run(files: list[InputFile]):
        names.add(threading.current_thread().name)
        return extract_part(files, cfg)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, [[slow, good], [good, slow], [good]]))
    assert all(t != "MainThread" for t in names)
    assert [r.quarantine["reason"].to_pylist() for r in results] == [["timeout"], ["timeout"], []]
    texts = {r.kept["text"][0].as_py() for r in results}
    assert len(texts) == 1 and len(texts.pop()) > 3000


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_timeout_inside_ray_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray task runs off the main thread of a worker process: the timeout must still hold."""
    for key, value in {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "DO_NOT_TRACK": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }.items():
        monkeypatch.setenv(key, value)
    ray = pytest.importorskip("ray")
    slow = _slow_page(tmp_path)
    (good,) = list_inputs([InputSpec(path=str(LANG_PAGES["es"]))])
    ray_dir = tempfile.mkdtemp(prefix="ray-rd-")  # short: AF_UNIX paths max 107 bytes
    ray.init(
        num_cpus=1,
        object_store_memory=80 << 20,
        include_dashboard=False,
        _temp_dir=ray_dir,
        log_to_driver=False,
    )
    try:
        task = ray.remote(extract_part)
        r = ray.get(task.remote([slow, good], ExtractConfig(timeout_s=0.5)), timeout=180)
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert r.quarantine["reason"].to_pylist() == ["timeout"]
    assert r.kept["source"].to_pylist() == [good.url]


def _multi_member_jsonl_gz(path: Path, members: int) -> int:
    """A .jsonl.gz of ``members`` gzip members (each a fortune per line): its trailer declares
    one member's size only. Returns the number of lines."""
    entries = SAMPLE / "fortune/fortunes-es/usr/share/games/fortunes/es/amistad.fortunes"
    lines = [json.dumps({"text": e}).encode() + b"\n" for e in entries.read_text().split("\n%\n")]
    member = gzip.compress(b"".join(lines))
    path.write_bytes(member * members)
    return len(lines) * members


def test_decompressed_bytes_are_capped_per_file(tmp_path: Path) -> None:
    """A .jsonl.gz whose gzip trailer understates its size stops at max_file_bytes: the lines
    read are kept, the rest is one too_large record, nothing else is read."""
    total = _multi_member_jsonl_gz(tmp_path / "many.jsonl.gz", 40)
    r = extract_part(
        list_inputs([InputSpec(path=str(tmp_path))]), ExtractConfig(max_file_bytes=200_000)
    )
    _balanced(r)
    assert r.stats.quarantined == {"too_large": 1}
    assert 0 < r.stats.kept < total
    (q,) = r.quarantine.to_pylist()
    assert q["offset"] == r.stats.docs_in - 1 and "max_file_bytes" in q["detail"]
    assert r.stats.bytes_kept <= 200_000


def test_records_held_are_capped_per_part(tmp_path: Path) -> None:
    """Once a part holds max_part_bytes, the rest of the file and the part's next files are
    too_large (the next files unread); in = kept + removed + quarantined still."""
    _multi_member_jsonl_gz(tmp_path / "a.jsonl.gz", 5)
    _multi_member_jsonl_gz(tmp_path / "b.jsonl.gz", 5)
    shutil.copy(LANG_PAGES["en"], tmp_path / "c.html")
    r = extract_part(
        list_inputs([InputSpec(path=str(tmp_path))]), ExtractConfig(max_part_bytes=50_000)
    )
    _balanced(r)
    reasons = {Path(q["source"]).name: q["reason"] for q in r.quarantine.to_pylist()}
    assert reasons == {"a.jsonl.gz": "too_large", "b.jsonl.gz": "too_large", "c.html": "too_large"}
    assert r.counters.get("html_docs", 0) == 0  # the full part did not read the page
    assert r.stats.kept > 0 and r.stats.bytes_kept < 50_000


def test_warc_stops_at_max_file_bytes(tmp_path: Path) -> None:
    """A WARC whose records together pass max_file_bytes: the records before are kept, then one
    too_large record for the rest of the file (not one per remaining record)."""
    from warcio.warcwriter import WARCWriter

    from tests.bad_inputs import _warc_response

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    page = LANG_PAGES["en"].read_bytes()
    html_type = [("Content-Type", "text/html; charset=utf-8")]
    for i in range(6):
        writer.write_record(_warc_response(writer, f"http://example.org/{i}", page, html_type))
    (tmp_path / "pages.warc.gz").write_bytes(buf.getvalue())
    cfg = ExtractConfig(max_file_bytes=len(page) * 3 + 1)
    r = extract_part(list_inputs([InputSpec(path=str(tmp_path))]), cfg)
    _balanced(r)
    assert r.stats.kept == 3 and r.stats.quarantined == {"too_large": 1}
    assert r.quarantine.column("offset").to_pylist() == [3]


def _share_of_words(a: str, b: str) -> float:
    """Share of ``b``'s distinct words that ``a`` has too."""
    wa, wb = set(a.lower().split()), set(b.lower().split())
    return len(wa & wb) / len(wb)


def test_resiliparse_extracts_a_real_page() -> None:
    """extract.html: resiliparse on a real Debian reference chapter: the body text (plus the
    table of contents and the footer's chapter links, which trafilatura drops), close to
    trafilatura's text; the same through the worker as in-process."""
    page = LANG_PAGES["en"]
    html = decode_text(page.read_bytes())
    text = extract_html(html, {"extractor": "resiliparse"})
    assert "Multilingualization (M17N) or Native Language Support for an application" in text
    assert text.rstrip().endswith("Chapter\xa09.\xa0System tips")  # it keeps the footer nav
    assert "export NCURSES_NO_UTF8_ACS=0." in text
    assert "<div" not in text and "<a " not in text and "href" not in text
    # most of trafilatura's words: its main-content rules drop some tables and tip boxes
    assert _share_of_words(text, extract_html(html)) > 0.7

    cfg = ExtractConfig.model_validate({"html": "resiliparse"})
    assert cfg.html.extractor == "resiliparse" and cfg.html.main_content
    files = list_inputs([InputSpec(path=str(page))])
    isolated = extract_part(files, cfg)
    _balanced(isolated)
    assert isolated.kept["text"].to_pylist() == [text]
    assert isolated.counters["html_docs"] == 1
    inproc = extract_part(files, cfg.model_copy(update={"isolate": False}))
    assert inproc.kept["text"].to_pylist() == [text]


def test_html_extractor_option_is_validated() -> None:
    assert ExtractConfig().html.extractor == "trafilatura"
    assert ExtractConfig.model_validate({"html": {"extractor": "resiliparse"}}).html.main_content
    with pytest.raises(ValueError, match="extractor"):
        ExtractConfig.model_validate({"html": "lxml"})
    with pytest.raises(ValueError, match="extra"):
        ExtractConfig.model_validate({"html": {"extractor": "resiliparse", "foo": 1}})


def test_resiliparse_under_the_same_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page that takes longer than timeout_s is quarantined as timeout with either
    extractor (the worker enforces it); the worker then serves the next page."""
    import curate.readers.extract as extract_mod

    page = LANG_PAGES["en"]
    files = list_inputs([InputSpec(path=str(page))])
    cfg = ExtractConfig.model_validate({"html": "resiliparse", "timeout_s": 0.5})
    real = extract_mod._Part._job

    def slow(self, kind, payload, options):  # noqa: ANN001, ANN202
        if kind == "html_page":
            return real(self, "sleep", 5, None)
        return real(self, kind, payload, options)

    monkeypatch.setattr(extract_mod._Part, "_job", slow)
    r = extract_part(files, cfg)
    assert r.quarantine["reason"].to_pylist() == ["timeout"]
    monkeypatch.undo()
    assert extract_part(files, cfg).kept.num_rows == 1


def test_a_resiliparse_worker_does_not_load_trafilatura() -> None:
    """A worker started for resiliparse pages does not import trafilatura (lxml is never
    mapped in it); a trafilatura page then gets a worker that has it, with the same text as
    in-process."""
    from curate.readers import worker as workers

    workers.shutdown()
    files = list_inputs([InputSpec(path=str(LANG_PAGES["en"]))])

    def mapped_lxml() -> list[bool]:
        return ["lxml" in Path(f"/proc/{w.proc.pid}/maps").read_text() for w in list(workers._free)]

    fast = extract_part(files, ExtractConfig.model_validate({"html": "resiliparse"}))
    assert fast.kept.num_rows == 1 and mapped_lxml() == [False]
    slow = extract_part(files, ExtractConfig())
    assert mapped_lxml() == [True]
    assert slow.kept["text"].equals(extract_part(files, ExtractConfig(isolate=False)).kept["text"])
    again = extract_part(files, ExtractConfig.model_validate({"html": "resiliparse"}))
    assert again.kept["text"].equals(fast.kept["text"]) and mapped_lxml() == [True]
