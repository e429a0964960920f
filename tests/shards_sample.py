"""A small loader of real text documents from data/sample for the mix/tokenizer/shard tests.

(The real readers live in curate/readers/; this keeps these tests independent of them.)
Domains: ``rst`` (llvm docs, en), ``fortune`` (one document per entry; en/de/es/it),
``code`` (python/perl/js/rust sources), ``prose`` (devil.dict.dz, gzip; blocks of paragraphs).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pyarrow as pa

from curate.schema import doc_id, docs_table

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
FORTUNE_LANG = {"fortunes": "en", "fortunes-de": "de", "fortunes-es": "es", "fortunes-it": "it"}


def _row(
    source: Path,
    offset: int,
    text: str,
    domain: str,
    fmt: str,
    lang: str | None,
    root: Path = SAMPLE,
) -> dict:
    rel = str(source.relative_to(root))
    return {
        "id": doc_id(rel, offset),
        "text": text,
        "source": rel,
        "offset": offset,
        "domain": domain,
        "format": fmt,
        "lang": lang,
        "lang_score": None,
    }


def _files(kind: str, root: Path = SAMPLE, packages: tuple[str, ...] | None = None) -> list[Path]:
    files = sorted(p for p in (root / kind).rglob("*") if p.is_file())
    if packages is None:
        return files
    return [p for p in files if p.relative_to(root / kind).parts[0] in packages]


def sample_docs(
    kinds: tuple[str, ...] = ("rst", "fortune", "code", "prose"),
    root: Path = SAMPLE,
    packages: tuple[str, ...] | None = None,
) -> pa.Table:
    """Documents of ``kinds`` from data/sample, or from ``root``: a corpus in the same layout
    (``python -m bench.corpus --tier small``), optionally only the given ``packages``."""
    rows: list[dict] = []

    def row(source: Path, offset: int, text: str, domain: str, fmt: str, lang: str | None):
        rows.append(_row(source, offset, text, domain, fmt, lang, root))

    if "rst" in kinds:
        for p in _files("rst", root, packages):
            row(p, 0, p.read_text(encoding="utf-8"), "rst", "text", "en")
    if "fortune" in kinds:
        for p in _files("fortune", root, packages):
            package = p.relative_to(root / "fortune").parts[0]
            if package not in FORTUNE_LANG or p.suffix == ".dat":
                continue
            entries = re.split(r"^%\n", p.read_text(encoding="utf-8"), flags=re.M)
            for i, e in enumerate(entries):
                if e.strip():
                    row(p, i, e, "fortune", "text", FORTUNE_LANG[package])
    if "code" in kinds:
        for p in _files("code", root, packages):
            row(p, 0, p.read_text(encoding="utf-8"), "code", "code", None)
    if "prose" in kinds:
        for p in _files("prose", root, packages):
            text = gzip.decompress(p.read_bytes()).decode("utf-8")
            blocks, cur = [], ""
            for para in re.split(r"(?<=\n)\n", text):
                cur += para + "\n"
                if len(cur) > 4000:
                    blocks.append(cur)
                    cur = ""
            blocks.append(cur)
            for i, b in enumerate(blocks):
                row(p, i, b, "prose", "text", "en")
    return docs_table(rows)


def split_parts(table: pa.Table, n: int) -> list[pa.Table]:
    """Cut a table into n interleaved parts (rows i, i+n, ...), as upstream stages would."""
    return [table.take(list(range(i, table.num_rows, n))) for i in range(n)]
