"""Throughput of the heuristics, langid and quality stages; heuristics against datatrove 0.10.1.

Same documents, same process: our ``heuristics`` stage with only Gopher quality on vs datatrove's
``GopherQualityFilter.filter`` (spaCy word split); then all four families vs datatrove's
GopherRepetition + GopherQuality + C4Quality + FineWebQuality filters run one after the other on
every document (no early exit, so both sides do the same work); then ``langid`` (lid.176.ftz,
chunked whole text) and ``quality`` (a model trained here on data/sample, as in the tests).

    PYTHONPATH=. /work/main/.venv-bench/bin/python -m bench.filters --corpus /work/corpus/small

Documents: rst sources (LLVM + Python docs), the Debian reference / jargon file in ~4 kB blocks,
and fortune entries, taken evenly up to ``--max-docs``. docs/s/core = documents / CPU seconds of
this single-threaded process (meaningful on a shared machine); wall-clock docs/s beside it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.timing import Throughput, timed
from curate.filters.heuristics import HEURISTICS, HeuristicsConfig
from curate.filters.langid import LANGID, LangIdConfig
from curate.filters.langid import load_model as load_lid_model
from curate.filters.quality import QUALITY, QualityConfig, fasttext_input
from curate.filters.quality import load_model as load_quality_model
from curate.filters.quality_cli import read_texts
from curate.filters.quality_train import QualityTrainConfig, train_quality_model
from curate.schema import docs_table

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def _blocks(text: str, size: int = 4000) -> list[str]:
    out, cur = [], ""
    for para in re.split(r"(?<=\n)\n", text):
        cur += para + "\n"
        if len(cur) > size:
            out.append(cur)
            cur = ""
    return out + ([cur] if cur.strip() else [])


def load_docs(corpus: Path, max_docs: int) -> list[dict]:
    rows: list[tuple[str, str, str]] = []
    for path in sorted((corpus / "rst").rglob("*.txt")):
        rows.append((str(path), path.read_text("utf-8", "replace"), "rst"))
    for path in sorted((corpus / "prose").rglob("*")):
        if path.is_file() and path.suffix in {".gz", ".dz"}:
            text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
            rows += [(str(path), b, "prose") for b in _blocks(text)]
    for path in sorted((corpus / "fortune").rglob("*")):
        if path.is_file() and path.suffix != ".dat":
            text = path.read_text("utf-8", "replace")
            rows += [(str(path), e, "fortune") for e in re.split(r"^%$", text, flags=re.M)
                     if e.strip()]  # fmt: skip
    rows = rows[:: max(1, len(rows) // max_docs)][:max_docs] if max_docs else rows
    return [
        {"id": str(i), "text": t, "source": s, "offset": i, "domain": d, "format": "text",
         "lang": "en"}
        for i, (s, t, d) in enumerate(rows)
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/corpus/small"))
    ap.add_argument("--max-docs", type=int, default=2000, help="0: all")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()

    rows = load_docs(args.corpus, args.max_docs)
    table = docs_table(rows)
    texts = [r["text"] for r in rows]
    n, mb = len(rows), sum(len(t.encode()) for t in texts) / 1e6
    throughput = Throughput(n, mb, name_width=44)
    results, record = throughput.results, throughput.record

    print(f"{n} documents, {mb:.1f} MB, python {platform.python_version()}, {platform.machine()}")

    # --- Gopher quality alone: ours vs datatrove ---
    only_quality = HeuristicsConfig(
        gopher_repetition={"enabled": False}, c4={"enabled": False}, fineweb={"enabled": False}
    )
    cpu, wall, res = timed(lambda: HEURISTICS.run(table, only_quality), args.repeat)
    ours_removed = set(res.removed["id"].to_pylist())
    record("gopher quality: sluice heuristics stage", cpu, wall,
           f"removed {len(ours_removed)}")  # fmt: skip
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    docs = [Document(text=r["text"], id=r["id"]) for r in rows]
    gq = GopherQualityFilter()
    gq.filter(docs[0])  # load spaCy outside the timing
    cpu_dt, wall_dt, verdicts = timed(lambda: [gq.filter(d) for d in docs], args.repeat)
    dt_removed = {d.id for d, v in zip(docs, verdicts, strict=True) if v is not True}
    agree = sum((r["id"] in ours_removed) == (r["id"] in dt_removed) for r in rows) / n
    record("gopher quality: datatrove 0.10.1 GopherQualityFilter", cpu_dt, wall_dt,
           f"removed {len(dt_removed)}; same decision on {agree:.1%} of docs")  # fmt: skip
    speedup = results["gopher quality: sluice heuristics stage"]["docs_per_cpu_s"] / (n / cpu_dt)
    print(f"  speed-up per core: {speedup:.1f}x")
    results["gopher_quality_speedup"] = {"x": speedup, "agreement": agree}

    # --- all four families ---
    cpu, wall, res = timed(lambda: HEURISTICS.run(table, HeuristicsConfig()), args.repeat)
    record("all heuristics: sluice (one split, C4 rewrite)", cpu, wall,
           f"kept {res.stats.kept}")  # fmt: skip
    chain = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(),
             FineWebQualityFilter()]  # fmt: skip
    for f in chain:
        f.filter(Document(text=texts[0], id="warm"))

    def datatrove_all() -> int:
        kept = 0
        for r in rows:
            ok = True
            for f in chain:  # every filter sees every document: no early exit on either side
                ok = (f.filter(Document(text=r["text"], id=r["id"])) is True) and ok
            kept += ok
        return kept

    cpu_dt, wall_dt, kept_dt = timed(datatrove_all, 1)
    record("all heuristics: datatrove 4 filters", cpu_dt, wall_dt, f"kept {kept_dt}")
    results["all_heuristics_speedup"] = {
        "x": results["all heuristics: sluice (one split, C4 rewrite)"]["docs_per_cpu_s"]
        / (n / cpu_dt)
    }
    print(f"  speed-up per core: {results['all_heuristics_speedup']['x']:.1f}x")

    # --- langid ---
    cpu, wall, res = timed(lambda: LANGID.score(table, LangIdConfig()), args.repeat)
    langs = res["lang"].to_pylist()
    top = sorted({lang: langs.count(lang) for lang in set(langs)}.items(), key=lambda kv: -kv[1])
    record("langid: lid.176.ftz, chunked whole text", cpu, wall, f"top {top[:4]}")
    one = LangIdConfig(chunk_chars=10**9)
    cpu, wall, _ = timed(lambda: LANGID.score(table, one), args.repeat)
    record("langid: lid.176.ftz, whole text in one piece", cpu, wall)
    # peer: the same model called directly, one predict per document (newlines removed)
    lid = load_lid_model()
    flat = [t.replace("\n", " ") for t in texts]
    cpu, wall, _ = timed(lambda: lid.predict(flat, k=1), args.repeat)
    record("langid peer: plain fastText predict, whole text", cpu, wall)

    # --- quality ---
    with tempfile.TemporaryDirectory() as out:
        from tests.test_toxicity import fortune_entries  # the tests' reader of sample fortunes

        positives = read_texts(str(SAMPLE / p) for p in ("html/python3.11-doc",
                               "html/debian-reference-en", "prose", "rst/llvm-16-doc"))  # fmt: skip
        negatives = [e for pkg in ("fortunes", "fortunes-de", "fortunes-es", "fortunes-it",
                     "fortunes-it-off", "fortunes-es-off") for e in fortune_entries(pkg)]  # fmt: skip
        c0, w0 = time.process_time(), time.perf_counter()
        stats = train_quality_model(positives, negatives, out, QualityTrainConfig())
        print(f"quality: trained in {time.perf_counter() - w0:.1f} s wall "
              f"(child process; parent CPU {time.process_time() - c0:.1f} s), "
              f"held-out {json.dumps(stats['held_out'])}")  # fmt: skip
        cfg = QualityConfig(model_path=str(Path(out) / "quality.bin"))
        cpu, wall, res = timed(lambda: QUALITY.score(table, cfg), args.repeat)
        scores = np.asarray(res["quality_score"].to_pylist(), dtype=float)
        record("quality: fastText classifier", cpu, wall,
               f"mean score {scores.mean():.3f}")  # fmt: skip
        cpu, wall, _ = timed(lambda: fasttext_input(table["text"]), args.repeat)
        record("quality: its text normalisation alone", cpu, wall)
        model = load_quality_model(cfg.model_path)  # peer: the same model, predict called directly
        cpu, wall, _ = timed(lambda: model.predict(flat, k=2), args.repeat)
        record("quality peer: plain fastText predict", cpu, wall)
        results["quality_held_out"] = stats["held_out"]

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
