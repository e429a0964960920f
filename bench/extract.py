"""Extraction throughput: Sluice's ``extract_part`` against plain trafilatura and plain pypdfium2
called directly on the same files, in the same run; and resiliparse against trafilatura.

    /work/main/.venv/bin/python -m bench.extract --corpus /work/corpus/small

resiliparse (``extract.html: resiliparse``) is measured the same way (plain
``extract_plain_text`` and through ``extract_part``), then compared with trafilatura's text on the
same pages: the distribution of the word-set Jaccard similarity, and the downstream effect: the
share of each extractor's documents that the heuristics stage (langid, then the default config's
Gopher/C4/FineWeb rules) removes. ``--dump FILE`` writes, for 20 pages, the words each extractor
keeps that the other drops, to read by eye.

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
from curate.readers.html import HtmlOptions, trafilatura_options

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
                **trafilatura_options(options),
            ) or ""
        )  # fmt: skip
    return out


def plain_resiliparse(paths: list[str], options: HtmlOptions) -> list[str]:
    from resiliparse.extract.html2text import extract_plain_text

    return [
        extract_plain_text(
            Path(p).read_bytes().decode("utf-8"), preserve_formatting=True,
            main_content=options.main_content, list_bullets=options.list_bullets,
            alt_texts=options.alt_texts, links=False, comments=False,
        ).strip()
        for p in paths
    ]  # fmt: skip


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
    ap.add_argument("--dump", type=Path, help="write 20 pages' word differences here")
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
    resili = cfg.model_copy(update={"html": HtmlOptions(extractor="resiliparse")})
    pdf_files = pdfs * args.pdf_repeat
    pdf_urls = [f.url for f in pdf_files]
    # warm up everything timed below (worker start, lazy imports, caches)
    extract_part(html[:2] + pdfs[:1], cfg)
    extract_part(html[:2] + pdfs[:1], inproc)
    plain_trafilatura([f.url for f in html[:2]], cfg.html)
    plain_resiliparse([f.url for f in html[:2]], resili.html)
    extract_part(html[:2], resili)
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
        "HTML: plain resiliparse extract_plain_text": lambda: (
            len(html),
            plain_resiliparse([f.url for f in html], resili.html),
        ),
        "HTML: sluice extract_part, resiliparse (worker process)": lambda: (
            len(html),
            _texts_by_url(extract_part(html, resili), html),
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
    plain_resili = best["HTML: plain resiliparse extract_plain_text"][4]
    rows = []
    for name, (n, own, child, wall, out) in best.items():
        same = None
        if name.startswith("HTML: sluice"):
            peer = plain_resili if "resiliparse" in name else plain_html
            same = sum(a == b for a, b in zip(peer, out, strict=True))  # type: ignore[arg-type]
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
    compare_extractors(
        html,
        best["HTML: sluice extract_part (worker process)"][4],  # type: ignore[arg-type]
        best["HTML: sluice extract_part, resiliparse (worker process)"][4],  # type: ignore[arg-type]
        args.dump,
    )


def _words(text: str) -> set[str]:
    return set(text.lower().split())


def jaccard(a: str, b: str) -> float:
    """Word-set Jaccard similarity (1.0 for two empty texts)."""
    wa, wb = _words(a), _words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def heuristics_losses(files: list, texts: list[str]) -> tuple[int, dict[str, int]]:  # noqa: ANN001
    """(documents in, removed by reason) after langid → heuristics (default config's options)."""
    from curate.filters.heuristics import HEURISTICS, HeuristicsConfig
    from curate.filters.langid import LANGID, LangIdConfig
    from curate.schema import docs_table

    rows = [
        {"id": str(i), "text": t, "source": f.url, "offset": 0, "domain": "web", "format": "html"}
        for i, (f, t) in enumerate(zip(files, texts, strict=True))
        if t.strip()
    ]
    table = LANGID.run(docs_table(rows), LangIdConfig()).kept
    cfg = HeuristicsConfig.model_validate(
        {"c4": {"domains": ["web"], "rewrite": False},
         "fineweb": {"domains": ["web"], "max_dup_chars": 0.1}}
    )  # fmt: skip
    res = HEURISTICS.run(table, cfg)
    return table.num_rows, dict(res.stats.removed)


def compare_extractors(files: list, traf: list[str], resi: list[str], dump: Path | None) -> None:  # noqa: ANN001
    """Text agreement and downstream losses of trafilatura vs resiliparse (module doc)."""
    import numpy as np

    sims = np.array([jaccard(a, b) for a, b in zip(traf, resi, strict=True)])
    qs = np.percentile(sims, [10, 25, 50, 75, 90])
    print(f"\nword-set Jaccard trafilatura vs resiliparse, {len(sims)} pages: mean {sims.mean():.3f}; "
          "p10 {:.3f}, p25 {:.3f}, median {:.3f}, p75 {:.3f}, p90 {:.3f}".format(*qs))  # fmt: skip
    for name, texts in (("trafilatura", traf), ("resiliparse", resi)):
        chars = sum(len(t) for t in texts)
        empty = sum(not t.strip() for t in texts)
        n_in, removed = heuristics_losses(files, texts)
        lost = sum(removed.values())
        top = ", ".join(f"{k} {v}" for k, v in sorted(removed.items(), key=lambda kv: -kv[1])[:4])
        print(f"{name}: {chars / 1e6:.2f} M chars, {empty} empty; heuristics remove {lost}/{n_in} "
              f"({lost / max(n_in, 1):.1%}): {top}")  # fmt: skip
    if dump:
        step = max(1, len(files) // 20)
        with open(dump, "w") as out:
            for i in range(0, len(files), step)[:20]:
                wa, wb = _words(traf[i]), _words(resi[i])
                out.write(f"## {files[i].url}  jaccard {sims[i]:.3f}  "
                          f"chars {len(traf[i])} / {len(resi[i])}\n")  # fmt: skip
                out.write(f"only trafilatura ({len(wa - wb)}): {' '.join(sorted(wa - wb)[:80])}\n")
                out.write(
                    f"only resiliparse ({len(wb - wa)}): {' '.join(sorted(wb - wa)[:80])}\n\n"
                )
        print(f"20 pages' differences written to {dump}")


def _pdf_pages(result) -> tuple[int, object]:  # noqa: ANN001
    return result.counters["pdf_pages"], None


def _texts_by_url(result, files) -> list[str]:  # noqa: ANN001
    by_url = dict(
        zip(result.kept["source"].to_pylist(), result.kept["text"].to_pylist(), strict=True)
    )
    return [by_url.get(f.url, "") for f in files]


if __name__ == "__main__":
    main()
