"""Extraction throughput: Sluice's ``extract_part`` against plain trafilatura and plain pypdfium2
called directly on the same files, in the same run.

    /work/main/.venv/bin/python -m bench.extract --corpus /work/corpus/small

(``-m``: run as a script, ``bench/tokenize.py`` would shadow the standard library module.)

Per-core rates are documents (or pages) per CPU second, counting the CPU of this process and of
the extraction worker processes (read from /proc), so they stay meaningful on a loaded machine;
wall-clock rates are printed beside them. Workers are started (and warmed) before timing: their
start-up is a one-off per process. "in-process" is ``ExtractConfig(isolate=False)``: the same
code without the worker (no timeout), which separates the cost of the process boundary from the
cost of decoding, checks and building the Arrow table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from curate.readers import ExtractConfig, InputSpec, extract_part, list_inputs
from curate.readers import worker as workers
from curate.readers.html import HtmlOptions

_TICK = os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    total = 0.0
    for w in list(workers._free):
        try:
            fields = Path(f"/proc/{w.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(fn: Callable[[], object]) -> tuple[float, float, float, object]:
    """(CPU seconds of this process, CPU seconds of the workers, wall seconds, result)."""
    cpu0, child0, wall0 = time.process_time(), _children_cpu(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - wall0
    return time.process_time() - cpu0, _children_cpu() - child0, wall, out


def plain_trafilatura(paths: list[str], options: HtmlOptions) -> list[str]:
    import trafilatura

    out = []
    for p in paths:
        html = Path(p).read_bytes().decode("utf-8")
        out.append(
            trafilatura.extract(
                html, output_format="txt", with_metadata=False, deduplicate=False,
                **options.model_dump(),
            ) or ""
        )  # fmt: skip
    return out


def plain_pdfium(paths: list[str]) -> tuple[int, list[str]]:
    import pypdfium2 as pdfium

    pages, texts = 0, []
    for p in paths:
        doc = pdfium.PdfDocument(Path(p).read_bytes())
        parts = []
        for i in range(len(doc)):
            page = doc[i]
            tp = page.get_textpage()
            parts.append(tp.get_text_range())
            tp.close()
            page.close()
        pages += len(doc)
        texts.append("\n\n".join(parts))
        doc.close()
    return pages, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/corpus/small"))
    ap.add_argument("--html", type=int, default=200, help="HTML pages (every k-th, sorted)")
    ap.add_argument("--pdf-repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    html = list_inputs([InputSpec(path=str(args.corpus / "html"), glob="**/*.html")])
    html = html[:: max(1, len(html) // args.html)][: args.html]
    pdfs = list_inputs([InputSpec(path=str(args.corpus / "pdf"), glob="**/*.pdf")])
    cfg = ExtractConfig()
    print(f"# {platform.processor() or platform.machine()}, nproc {os.cpu_count()}, "
          f"load {os.getloadavg()}")  # fmt: skip
    print(f"# {len(html)} HTML pages ({sum(f.size for f in html) / 1e6:.1f} MB), "
          f"{len(pdfs)} PDFs ({sum(f.size for f in pdfs) / 1e6:.1f} MB)")  # fmt: skip

    inproc = cfg.model_copy(update={"isolate": False})
    pdf_files = pdfs * args.pdf_repeat
    pdf_urls = [f.url for f in pdf_files]
    # warm up everything timed below (worker start, lazy imports, caches)
    extract_part(html[:2] + pdfs[:1], cfg)
    extract_part(html[:2] + pdfs[:1], inproc)
    plain_trafilatura([f.url for f in html[:2]], cfg.html)
    plain_pdfium(pdf_urls[:1])

    runs: dict[str, Callable[[], tuple[int, object]]] = {
        "HTML: plain trafilatura.extract": lambda: (
            len(html),
            plain_trafilatura([f.url for f in html], cfg.html),
        ),
        "HTML: sluice extract_part (worker process)": lambda: (
            len(html),
            _texts_by_url(extract_part(html, cfg), html),
        ),
        "HTML: sluice extract_part (in-process)": lambda: (
            len(html),
            _texts_by_url(extract_part(html, inproc), html),
        ),
        "PDF: plain pypdfium2": lambda: plain_pdfium(pdf_urls),
        "PDF: sluice extract_part (worker process)": lambda: _pdf_pages(
            extract_part(pdf_files, cfg)
        ),
        "PDF: sluice extract_part (in-process)": lambda: _pdf_pages(
            extract_part(pdf_files, inproc)
        ),
    }
    best: dict[str, tuple[int, float, float, float, object]] = {}
    for _ in range(args.rounds):  # interleaved rounds; the fastest CPU time of each run is kept
        for name, fn in runs.items():
            own, child, wall, (n, out) = measure(fn)
            if name not in best or own + child < best[name][1] + best[name][2]:
                best[name] = (n, own, child, wall, out)
    plain_html = best["HTML: plain trafilatura.extract"][4]
    rows = []
    for name, (n, own, child, wall, out) in best.items():
        same = None
        if name.startswith("HTML: sluice"):
            same = sum(a == b for a, b in zip(plain_html, out, strict=True))  # type: ignore[arg-type]
        rows.append((name, n, own, child, wall, same))

    print("| run | units | CPU s (this process + workers) | units/s/core | wall s | units/s wall "
          "| same text as plain |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, n, own, child, wall, same in rows:
        s = "" if same is None else f"{same}/{n}"
        cpu = own + child
        print(f"| {name} | {n} | {cpu:.2f} ({own:.2f} + {child:.2f}) | {n / cpu:.1f} | "
              f"{wall:.2f} | {n / wall:.1f} | {s} |")  # fmt: skip
    print(f"# load after: {os.getloadavg()}")


def _pdf_pages(result) -> tuple[int, object]:  # noqa: ANN001
    return result.counters["pdf_pages"], None


def _texts_by_url(result, files) -> list[str]:  # noqa: ANN001
    by_url = dict(
        zip(result.kept["source"].to_pylist(), result.kept["text"].to_pylist(), strict=True)
    )
    return [by_url.get(f.url, "") for f in files]


if __name__ == "__main__":
    main()
