"""WARC reading: FastWARC (Sluice's reader) against warcio on the same file, records/s/core.

    .venv/bin/python -m bench.warc --html /tmp/h8-corpus/small/html --pages 1000

The file is written here from real Debian HTML pages (every k-th of the sorted list) with the
HTTP headers a web server sends, one gzip member per record (as crawlers write them): per page a
``request`` and a ``response`` record, after a ``warcinfo``. Both readers stream every record and
read every response body to the end (warcio: ``content_stream().read()`` with its HTTP header
parsing; FastWARC: ``parse_http`` and ``reader.read()``); a third row is Sluice's own
:func:`curate.readers.warc.warc_payloads` (checks, decoding, counters). Rates are per CPU second
of this process, best of ``--rounds`` interleaved rounds; ``.warc`` and ``.warc.gz`` both.

On ``.warc.gz`` two more rows ask whether a faster inflater helps: FastWARC reading the
decompressed stream of ISA-L (``isal.igzip``, the fastest inflater on PyPI) instead of its own
gzip reader, and ISA-L / zlib-ng inflating the whole file with no WARC parsing at all: the floor
under any reader of that file on this CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from curate.readers.warc import http_response, warc_payloads, warc_record, write_warc


def debian_pages(html_dir: Path, pages: int) -> list[Path]:
    """Every k-th ``.html`` page below ``html_dir`` (sorted), ``pages`` of them."""
    found = sorted(html_dir.rglob("*.html"))
    return found[:: max(1, len(found) // pages)][:pages]


def debian_warc(pages: list[Path], gzip: bool = True) -> bytes:
    """warcinfo, then a request and a response record per page (module doc)."""
    records = [
        warc_record("warcinfo", "", b"software: sluice-bench\r\n", "application/warc-fields")
    ]
    for i, page in enumerate(pages):
        uri = f"https://www.debian.org/doc/{i}/{page.name}"
        request = f"GET /doc/{i}/{page.name} HTTP/1.1\r\nHost: www.debian.org\r\n\r\n".encode()
        records.append(warc_record("request", uri, request, "application/http; msgtype=request"))
        body = http_response(page.read_bytes(), "text/html; charset=UTF-8")
        records.append(
            warc_record("response", uri, body, "application/http; msgtype=response", "text/html")
        )
    return write_warc(records, gzip)


def read_warcio(path: str) -> int:
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh):
            if rec.rec_type == "response":
                rec.content_stream().read()
                n += 1
    return n


def read_fastwarc(path: str) -> int:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n = 0
    for rec in ArchiveIterator(path, record_types=WarcRecordType.response, fsspec_args=False):
        rec.reader.read()
        n += 1
    return n


def read_fastwarc_isal(path: str) -> int:
    """FastWARC over ISA-L's decompressed stream (a Python file object) of a ``.warc.gz``."""
    import isal.igzip
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n = 0
    with isal.igzip.open(path, "rb") as fh:
        for rec in ArchiveIterator(fh, record_types=WarcRecordType.response):
            rec.reader.read()
            n += 1
    return n


def inflate_only(module: str) -> Callable[[str], int]:
    """Inflate every gzip member of the file with ``module``'s gzip reader, parse nothing."""

    def inflate(path: str) -> int:
        import importlib

        gzip = importlib.import_module(module)
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
        return -1  # no records counted

    return inflate


def read_sluice(path: str) -> int:
    return sum(1 for _ in warc_payloads(path, 32 << 20))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=Path("/work/corpus/small/html"))
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pages = debian_pages(args.html, args.pages)
    print(f"# nproc {os.cpu_count()}, load {os.getloadavg()}")
    readers: dict[str, Callable[[str], int]] = {
        "warcio ArchiveIterator": read_warcio,
        "fastwarc ArchiveIterator": read_fastwarc,
        "sluice warc_payloads (fastwarc)": read_sluice,
    }
    gz_only: dict[str, Callable[[str], int]] = {
        "fastwarc over isal.igzip stream": read_fastwarc_isal,
        "inflate only, ISA-L (isal.igzip), no parsing": inflate_only("isal.igzip"),
        "inflate only, zlib-ng (zlib_ng.gzip_ng), no parsing": inflate_only("zlib_ng.gzip_ng"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        print("| file | reader | records | CPU s | records/s/core | MB/s/core | vs warcio |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for gz in (True, False):
            path = os.path.join(tmp, "debian.warc.gz" if gz else "debian.warc")
            Path(path).write_bytes(debian_warc(pages, gz))
            size = os.path.getsize(path) / 1e6
            records = 1 + 2 * len(pages)
            best: dict[str, float] = {}
            runs = {**readers, **gz_only} if gz else readers
            for _ in range(args.rounds):
                for name, fn in runs.items():
                    c0 = time.process_time()
                    n = fn(path)
                    cpu = time.process_time() - c0
                    assert n in (len(pages), -1), (name, n)
                    best[name] = min(best.get(name, float("inf")), cpu)
            base = records / best["warcio ArchiveIterator"]
            for name, cpu in best.items():
                print(f"| {Path(path).name} ({size:.1f} MB) | {name} | {records} | {cpu:.3f} | "
                      f"{records / cpu:,.0f} | {size / cpu:.1f} | {records / cpu / base:.1f}× |")  # fmt: skip
    print(f"# load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
