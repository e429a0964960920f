"""Per-language heuristic thresholds from corpus statistics (FineWeb-2 style), written to
``curate/filters/lang_thresholds.json`` (the heuristics stage's shipped ``by_lang``).

The papers' thresholds were set on English. Where a measurement depends on the language — words
per document (a Japanese character is a "word": :mod:`curate.text`) and repeated n-grams (a
Japanese character 5-gram repeats far more often than an English word 5-gram) — the English
threshold is scaled by how the language differs from English on the same text: the Debian
Reference, a parallel translation (``debian-reference-{en,de,es,fr,id,it,ja,pt,zh-cn,zh-tw}``,
fetched with apt as ``bench/corpus.py``; not in the evaluation corpus of ``bench/evalcorpus.py``).
For each language L and measurement m, over the same chapters::

    threshold_L = threshold_en × mean_L(m) / mean_en(m)

(a ratio of means, not of medians: most chapters have no repeated n-gram at all). A ratio
within ±10 % of 1 keeps the English threshold. Languages without a translation keep the English
thresholds.

    PYTHONPATH=. python -m bench.lang_thresholds            # rewrites the JSON
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.corpus import fetch_package
from curate.filters.heuristics import (
    HEURISTICS,
    LANG_THRESHOLDS,
    GopherQualityConfig,
    GopherRepetitionConfig,
    HeuristicsConfig,
)
from curate.readers.html import extract_html
from curate.schema import doc_id, docs_table

LANGS = ("en", "de", "es", "fr", "id", "it", "ja", "pt", "zh-cn", "zh-tw")
TOLERANCE = 0.1


def reference_texts(cache: Path) -> dict[str, list[str]]:
    """Chapter texts of the Debian Reference per language (zh-cn and zh-tw both ``zh``)."""
    out: dict[str, list[str]] = {}
    for code in LANGS:
        root = fetch_package(f"debian-reference-{code}", cache)
        pages = sorted(root.glob(f"usr/share/debian-reference/*.{code}.html"))
        texts = [extract_html(p.read_text("utf-8", "replace")) for p in pages]
        out.setdefault(code.split("-")[0], []).extend(t for t in texts if t.strip())
    return out


def measure(texts: list[str], lang: str) -> pa.Table:
    """The heuristics' scores of ``texts`` as documents of ``lang`` (English thresholds)."""
    rows = [
        {"id": doc_id(f"r{i}", 0), "text": t, "source": f"r{i}", "offset": 0, "domain": "web",
         "format": "html", "lang": lang}
        for i, t in enumerate(texts)
    ]  # fmt: skip
    cfg = HeuristicsConfig(gopher_quality={"by_lang": {}}, gopher_repetition={"by_lang": {}})
    return HEURISTICS.score(docs_table(rows), cfg)


def scaled(base: dict[str, float], means: dict[str, float], en: dict[str, float]) -> dict:
    """English thresholds scaled by the language's mean / English mean (see module doc)."""
    out: dict[str, float] = {}
    for key, measurement in FIELDS.items():
        if en.get(measurement, 0) <= 0 or means.get(measurement, 0) <= 0:
            continue
        ratio = means[measurement] / en[measurement]
        if abs(ratio - 1) > TOLERANCE:
            out[key] = round(base[key] * ratio, 4)
    return out


FAMILY_OF = {"gopher_quality": ("min_words", "max_words")}
FIELDS: dict[str, str] = {"min_words": "gopher_words", "max_words": "gopher_words"}
_rep = GopherRepetitionConfig()
FIELDS |= {f"top_ngrams.{n}": f"gopher_top_{n}gram" for n in _rep.top_ngrams}
FIELDS |= {f"dup_ngrams.{n}": f"gopher_dup_{n}gram" for n in _rep.dup_ngrams}


def english_thresholds() -> dict[str, float]:
    q, r = GopherQualityConfig(), _rep
    out = {"min_words": float(q.min_words or 0), "max_words": float(q.max_words or 0)}
    out |= {f"top_ngrams.{n}": v for n, v in r.top_ngrams.items()}
    out |= {f"dup_ngrams.{n}": v for n, v in r.dup_ngrams.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/sluice/debs")
    parser.add_argument("--out", type=Path, default=LANG_THRESHOLDS)
    args = parser.parse_args(argv)
    texts = reference_texts(args.cache)
    means: dict[str, dict[str, float]] = {}
    for lang, docs in texts.items():
        table = measure(docs, lang)
        means[lang] = {
            m: float(np.nanmean(np.asarray(table[m].to_pylist(), dtype=float)))
            for m in set(FIELDS.values())
        }
    base = english_thresholds()
    families: dict[str, dict[str, dict[str, float]]] = {}
    for lang in sorted(means):
        if lang == "en":
            continue
        for key, value in scaled(base, means[lang], means["en"]).items():
            family = "gopher_quality" if key in FAMILY_OF["gopher_quality"] else "gopher_repetition"
            families.setdefault(family, {}).setdefault(lang, {})[key] = value
    out = {
        "command": "PYTHONPATH=. python -m bench.lang_thresholds",
        "reference": "debian-reference-{" + ",".join(LANGS) + "} 2.100 (Debian 12), HTML chapters",
        "documents": {lang: len(docs) for lang, docs in sorted(texts.items())},
        "means": {
            lang: {k: round(v, 4) for k, v in sorted(m.items())} for lang, m in means.items()
        },
        "families": families,
    }
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    print(json.dumps(families, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
