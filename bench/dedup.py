"""Dedup benchmarks on real Debian documents.

    throughput  MinHash signatures docs/s/core: sluice ``near_dedup`` map (vectorised) vs
                datatrove 0.10.1 ``MinhashDedupSignature`` (get_shingles + get_signature) vs
                datasketch ``MinHash.update`` per shingle; same documents, same process.
    curve       precision/recall of near_dedup on the llvm-{13,14,15,16}-doc rst sources against
                exact Jaccard of word 5-gram sets over all pairs (sparse incidence product).
    memory      peak RSS (ru_maxrss) of map and of reduce, each in its own subprocess, over
                100k documents sampled and perturbed from data/sample text (``--chapters``:
                a share of them are runs of an earlier document's paragraphs, i.e. contained).
    containment near_dedup's containment (LSH Ensemble + exact verification) on the llvm
                manuals and Debian Reference (en, ja: chapter pages, single txt, PDF) against
                exact containment over all pairs; datasketch's MinHashLSHEnsemble on the same
                signatures as the peer; then time and peak memory at 100k (``memory``).

Run as a module from the repository root (so no file in bench/ can shadow a standard-library
module), throughput in the bench venv (datatrove is only there):
    PYTHONPATH=. /work/main/.venv-bench/bin/python -m bench.dedup throughput --docs 1000
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.dedup.minhash import NEAR_DEDUP, NearDedupConfig  # noqa: E402
from curate.dedup.text import text_shingles  # noqa: E402
from curate.schema import doc_id, docs_table  # noqa: E402
from curate.storage import parquet_bytes, write_bytes_atomic  # noqa: E402

DEBS = Path.home() / ".cache/sluice/debs"
SAMPLE = ROOT / "data" / "sample"


def llvm_rows(versions=(13, 14, 15, 16)) -> list[dict]:
    """Every rst source of the llvm-N-doc packages in the deb cache (sample pages as fallback)."""
    rows = []
    for v in versions:
        base = DEBS / f"llvm-{v}-doc/usr/share/doc/llvm-{v}-doc/html/_sources"
        if not base.exists():
            base = SAMPLE / f"rst/llvm-{v}-doc/usr/share/doc/llvm-{v}-doc/html/_sources"
        for p in sorted(base.rglob("*.rst.txt")):
            source = f"llvm-{v}/{p.relative_to(base)}"
            text = p.read_text(encoding="utf-8", errors="replace")
            rows.append(
                dict(
                    id=doc_id(source),
                    text=text,
                    source=source,
                    offset=0,
                    domain="code",
                    format="rst",
                )
            )
    return rows


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    return f"nproc={os.cpu_count()}, cpu={cpu}, load={os.getloadavg()[0]:.2f}"


# --- throughput ----------------------------------------------------------------------------


def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def throughput(args: argparse.Namespace) -> None:
    rows = llvm_rows()
    rng = random.Random(0)
    rows = rng.sample(rows, min(args.docs, len(rows)))
    table = docs_table(rows)
    texts = [r["text"] for r in rows]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(rows)} llvm rst docs, {mb:.1f} MB; {machine()}")
    results: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, fn) -> None:
        results.setdefault(name, []).append(_timed(fn))

    cfg_fast = NearDedupConfig(verify=False)
    cfg_verify = NearDedupConfig(verify=True)
    cfg_no_containment = NearDedupConfig(verify=True, containment=None)

    try:
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

        tmp = tempfile.mkdtemp()
        dt = MinhashDedupSignature(output_folder=tmp, config=MinhashConfig())
        # xxhash 4 (pulled in by sluice) no longer encodes str itself, as the xxhash 3 that
        # datatrove 0.10.1 was written against did: encode here, exactly what xxhash 3 did.
        import xxhash

        dt._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode("utf-8"))
        dt_docs = texts

        def datatrove_sigs() -> None:
            for t in dt_docs:
                sh = dt.get_shingles(t)
                if sh.size:
                    dt.get_signature(sh)

        dt_sigs = datatrove_sigs
    except ImportError:
        dt_sigs = None
        print("datatrove not importable: run in the bench venv for the peer")

    from datasketch import MinHash

    ds_docs = texts
    word_re = re.compile(r"\w+")

    def datasketch_update() -> None:
        for t in ds_docs:
            w = word_re.findall(t.lower())
            m = MinHash(num_perm=128, seed=1)
            for i in range(max(len(w) - 4, 1)):
                m.update(" ".join(w[i : i + 5]).encode())

    # warm-up: spaCy's tokenizer, the permutation/LSH-parameter caches
    NEAR_DEDUP.map(table.slice(0, 5), cfg_fast)
    if dt_sigs:
        dt.get_shingles(texts[0])
    # other dedup stages on the same documents (no peer): exact hashing, decontam with an eval
    # set of 500 real paragraphs (jsonl) from data/sample
    from curate.dedup.decontam import DECONTAM, DecontamConfig
    from curate.dedup.exact import EXACT_DEDUP, ExactDedupConfig

    eval_path = Path(tempfile.mkdtemp()) / "eval.jsonl"
    paras = random.Random(1).sample(sample_paragraphs(), 500)
    eval_path.write_text("".join(json.dumps({"text": q}) + "\n" for q in paras))
    cfg_decontam = DecontamConfig(eval_files=[str(eval_path)])
    DECONTAM.run(table.slice(0, 2), cfg_decontam)  # builds the eval index once
    for _ in range(args.repeat):
        add("sluice exact_dedup map", lambda: EXACT_DEDUP.map(table, ExactDedupConfig()))
        add(
            "sluice decontam (13-grams, 500 eval paragraphs)",
            lambda: DECONTAM.run(table, cfg_decontam),
        )
        add("sluice near_dedup map (verify: false)", lambda: NEAR_DEDUP.map(table, cfg_fast))
        add("sluice near_dedup map (verify: true)", lambda: NEAR_DEDUP.map(table, cfg_verify))
        add(
            "sluice near_dedup map (verify: true, containment: off)",
            lambda: NEAR_DEDUP.map(table, cfg_no_containment),
        )
        if dt_sigs:
            add("datatrove 0.10.1 MinhashDedupSignature", dt_sigs)
        add("datasketch 2.0.0 MinHash.update per shingle", datasketch_update)

    out = {}
    n, nbytes = len(texts), mb
    for name, runs in results.items():
        cpu = min(c for _, c in runs)
        wall = min(w for w, _ in runs)
        out[name] = dict(
            docs=n,
            mb=nbytes,
            docs_per_s_core=n / cpu,
            mb_per_s_core=nbytes / cpu,
            wall_docs_per_s=n / wall,
        )
        print(
            f"{name:48s} {n:6d} docs  {n / cpu:9.1f} docs/s/core  {nbytes / cpu:6.2f} MB/s/core  wall {n / wall:9.1f} docs/s"
        )
    print(json.dumps(out))


# --- precision / recall on the llvm manuals ------------------------------------------------


def exact_pairs(rows: list[dict], n: int, min_j: float) -> dict[tuple[int, int], float]:
    """Exact Jaccard of word n-gram sets of every pair with J >= min_j (sparse X @ X.T)."""
    import scipy.sparse as sp

    sh = text_shingles(pa.array([r["text"] for r in rows], pa.large_string()), n)
    _, col = np.unique(sh.hashes, return_inverse=True)
    x = sp.csr_matrix(
        (np.ones(len(col), np.int32), col, sh.offsets), shape=(len(rows), int(col.max()) + 1)
    )
    inter = sp.triu(x @ x.T, k=1).tocoo()
    size = sh.counts()
    j = inter.data / (size[inter.row] + size[inter.col] - inter.data)
    keep = j >= min_j
    return dict(
        zip(
            zip(inter.row[keep].tolist(), inter.col[keep].tolist(), strict=True),
            j[keep].tolist(),
            strict=True,
        )
    )


def curve(args: argparse.Namespace) -> None:
    rows = llvm_rows()
    print(
        f"{len(rows)} llvm rst docs (4 versions), {sum(len(r['text']) for r in rows) / 1e6:.1f} MB; {machine()}"
    )
    t0 = time.perf_counter()
    truth = exact_pairs(rows, 5, 0.3)
    print(
        f"exact all-pairs Jaccard: {time.perf_counter() - t0:.1f}s, {len(truth)} pairs with J>=0.3"
    )
    index = {r["id"]: i for i, r in enumerate(rows)}
    settings = [dict(verify=False), dict(verify=True)]
    if args.bands:
        settings = [dict(verify=True, bands=args.bands, rows=args.rows)]
    for setting in settings:
        cfg = NearDedupConfig(**setting)
        verify = cfg.verify
        with tempfile.TemporaryDirectory() as tmp:
            urls = []
            size = 500
            t0 = time.perf_counter()
            for k in range(0, len(rows), size):
                url = f"{tmp}/map-{k // size:05d}.parquet"
                write_bytes_atomic(
                    parquet_bytes(NEAR_DEDUP.map(docs_table(rows[k : k + size]), cfg)), url
                )
                urls.append(url)
            t_map = time.perf_counter() - t0
            t0 = time.perf_counter()
            state = NEAR_DEDUP.reduce(urls, cfg)
            t_reduce = time.perf_counter() - t0
        members: dict[int, list[int]] = {}
        for i, c in zip(state["id"].to_pylist(), state["minhash_cluster"].to_pylist(), strict=True):
            members.setdefault(c, []).append(index[i])
        predicted = {
            (min(a, b), max(a, b)) for m in members.values() for a in m for b in m if a < b
        }
        print(
            f"verify={verify} LSH bands x rows {cfg.lsh_params()}: map {t_map:.1f}s, reduce {t_reduce:.1f}s, "
            f"{state.num_rows} docs in {len(members)} clusters, {state.num_rows - state['duplicate_of'].null_count} removed"
        )
        print("| J >= | true pairs | recall | precision (clustered pairs with J >= t) |")
        for t in (0.5, 0.7, 0.8, 0.9):
            pos = {p for p, j in truth.items() if j >= t}
            hit = len(pos & predicted)
            print(
                f"| {t} | {len(pos)} | {hit / max(len(pos), 1):.4f} | {hit / max(len(predicted), 1):.4f} |"
            )


# --- containment on real manuals -----------------------------------------------------------


def debian_reference_rows(langs=("en", "ja")) -> list[dict]:
    """Debian Reference per language: chapter pages (HTML, extracted as the html reader does),
    the single-file txt and the PDF (``apt-get download debian-reference-LANG`` + ``dpkg -x``
    into ~/.cache/sluice/debs/debian-reference-LANG)."""
    from curate.readers.html import extract_html
    from curate.readers.pdf import extract_pdf

    rows = []
    for lang in langs:
        base = DEBS / f"debian-reference-{lang}/usr/share/debian-reference"
        if not base.exists():
            raise SystemExit(f"{base} missing: apt-get download debian-reference-{lang}; dpkg -x")
        texts = {p.name: extract_html(p.read_text("utf-8")) for p in sorted(base.glob("*.html"))}
        txt = base / f"debian-reference.{lang}.txt.gz"
        texts[txt.name] = gzip.decompress(txt.read_bytes()).decode("utf-8", "replace")
        pdf = base / f"debian-reference.{lang}.pdf"
        texts[pdf.name] = extract_pdf(pdf.read_bytes()).text
        for name, text in texts.items():
            fmt = "pdf" if name.endswith(".pdf") else "html" if name.endswith(".html") else "text"
            source = f"debian-reference-{lang}/{name}"
            rows.append(
                dict(
                    id=doc_id(source), text=text, source=source, offset=0, domain="web", format=fmt
                )
            )
    return rows


def exact_containment_pairs(rows: list[dict], n: int, threshold: float) -> set[tuple[int, int]]:
    """Every (a, b), a != b, with |S_a ∩ S_b| >= threshold |S_a| over word n-gram sets."""
    import scipy.sparse as sp

    sh = text_shingles(pa.array([r["text"] for r in rows], pa.large_string()), n)
    _, col = np.unique(sh.hashes, return_inverse=True)
    x = sp.csr_matrix(
        (np.ones(len(col), np.int32), col, sh.offsets), shape=(len(rows), int(col.max()) + 1)
    )
    inter = (x @ x.T).tocoo()
    size = sh.counts()
    keep = (inter.row != inter.col) & (inter.data >= threshold * size[inter.row])
    return set(zip(inter.row[keep].tolist(), inter.col[keep].tolist(), strict=True))


def containment(args: argparse.Namespace) -> None:
    from curate.dedup.containment import (
        choose_containers,
        ensemble_candidates,
        estimated_containment,
        exact_containment,
        sampled_candidates,
    )
    from curate.dedup.minhash import signature_matrix

    t0 = time.perf_counter()
    rows = llvm_rows() + debian_reference_rows()
    mb = sum(len(r["text"].encode()) for r in rows) / 1e6
    print(
        f"{len(rows)} docs (llvm-13..16 rst + Debian Reference en/ja), {mb:.1f} MB, read in "
        f"{time.perf_counter() - t0:.1f}s; {machine()}"
    )
    t0 = time.perf_counter()
    truth_all = exact_containment_pairs(rows, 5, args.threshold)
    print(f"exact containment over all pairs: {time.perf_counter() - t0:.1f}s")
    cfg = NearDedupConfig(containment=args.threshold)
    t0 = time.perf_counter()
    mapped = pa.concat_tables(
        NEAR_DEDUP.map(docs_table(rows[k : k + 500]), cfg) for k in range(0, len(rows), 500)
    )
    print(
        f"near_dedup map (signatures + shingles, shared by near and containment): "
        f"{time.perf_counter() - t0:.1f}s"
    )
    sig = signature_matrix(mapped["signature"], cfg.num_perm)
    sizes = mapped["n_shingles"].to_numpy().astype(np.int64)
    offsets = mapped["shingles"].combine_chunks().offsets.to_numpy()
    values = mapped["shingles"].combine_chunks().flatten().to_numpy()
    sets = [values[offsets[i] : offsets[i + 1]] for i in range(len(rows))]
    queries = np.flatnonzero(sizes >= cfg.containment_min_shingles)
    truth = {p for p in truth_all if sizes[p[0]] >= cfg.containment_min_shingles}
    print(f"{len(truth)} true pairs (a in b, |a| >= {cfg.containment_min_shingles} shingles)")
    print(
        "| index | candidates | candidate recall | candidate precision | recall verified | "
        "precision verified | recall estimated | precision estimated | index s | verify s |"
    )
    sampled = mapped["sampled_shingles"].combine_chunks()
    s_offsets = sampled.offsets.to_numpy()
    s_values = sampled.flatten().to_numpy()
    n = len(rows)

    def by_ensemble(fn: float) -> np.ndarray:
        return ensemble_candidates(sig, sizes, queries, args.threshold, false_negative_weight=fn)

    def by_sample() -> np.ndarray:
        return sampled_candidates(s_offsets, s_values, queries, args.threshold)[0]

    def union() -> np.ndarray:
        code = np.unique(
            np.concatenate([p[:, 0] * n + p[:, 1] for p in (by_ensemble(0.5), by_sample())])
        )
        return np.stack([code // n, code % n], axis=1)

    indexes = [
        (f"LSH Ensemble, fn weight {fn}", lambda fn=fn: by_ensemble(fn)) for fn in args.fn_weight
    ]
    indexes += [
        (f"sampled shingles 1/{cfg.containment_sample}", by_sample),
        ("both (the stage)", union),
    ]
    for name, find in indexes:
        t0 = time.perf_counter()
        cand = find()
        cand = cand[sizes[cand[:, 1]] >= args.threshold * sizes[cand[:, 0]]]
        t_ens = time.perf_counter() - t0
        t0 = time.perf_counter()
        exact = np.array([exact_containment(sets[a], sets[b]) for a, b in cand.tolist()])
        t_verify = time.perf_counter() - t0
        est = estimated_containment(sig, sizes, cand)
        cset = {tuple(p) for p in cand.tolist()}
        verified = {
            tuple(p) for p, c in zip(cand.tolist(), exact, strict=True) if c >= args.threshold
        }
        estimated = {
            tuple(p) for p, c in zip(cand.tolist(), est, strict=True) if c >= args.threshold
        }

        def pr(found: set) -> str:
            hit = len(found & truth)
            return f"{hit / max(len(truth), 1):.4f} | {hit / max(len(found), 1):.4f}"

        print(
            f"| {name} | {len(cand):,} | {pr(cset)} | {pr(verified)} | {pr(estimated)} | "
            f"{t_ens:.2f} | {t_verify:.2f} |"
        )
        missed = truth - verified
        ratio = [sizes[b] / sizes[a] for a, b in missed]
        if missed:
            print(
                f"   missed {len(missed)} pairs; container/contained size ratio median "
                f"{np.median(ratio):.1f}, contained size median {np.median([sizes[a] for a, _ in missed]):.0f}"
            )
    if args.peer:
        from datasketch import LeanMinHash, MinHashLSHEnsemble

        t0 = time.perf_counter()
        ens = MinHashLSHEnsemble(threshold=args.threshold, num_perm=cfg.num_perm, num_part=16, m=8)
        lean = [LeanMinHash(seed=cfg.seed, hashvalues=s, scheme="affine32") for s in sig]
        nonempty = np.flatnonzero(sizes > 0)
        ens.index([(i, lean[i], int(sizes[i])) for i in nonempty.tolist()])
        t_index = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = {
            (int(q), k)
            for q in queries.tolist()
            for k in ens.query(lean[q], int(sizes[q]))
            if k != q
        }
        t_query = time.perf_counter() - t0
        exact_layout = ensemble_candidates(sig, sizes, queries, args.threshold, max_sizes=1 << 30)
        ours = {tuple(p) for p in exact_layout.tolist()}
        print(
            f"datasketch 2.0.0 MinHashLSHEnsemble: index {t_index:.2f}s, {len(queries)} "
            f"queries {t_query:.2f}s; same candidate pairs as ours (sizes not bucketed): {theirs == ours}"
        )

    # decisions of the whole stage vs the same decision rule on the exact pairs
    with tempfile.TemporaryDirectory() as tmp:
        urls = []
        for k in range(0, len(rows), 500):
            url = f"{tmp}/map-{k // 500:05d}.parquet"
            write_bytes_atomic(parquet_bytes(mapped.slice(k, 500)), url)
            urls.append(url)
        t0 = time.perf_counter()
        state = NEAR_DEDUP.reduce(urls, cfg)
        t_on = time.perf_counter() - t0
        t0 = time.perf_counter()
        NEAR_DEDUP.reduce(urls, NearDedupConfig(containment=None))
        t_off = time.perf_counter() - t0
    index = {r["id"]: i for i, r in enumerate(rows)}
    near_removed = {
        index[i]
        for i, d in zip(state["id"].to_pylist(), state["duplicate_of"].to_pylist(), strict=True)
        if d
    }
    removed = {
        index[i]: index[c]
        for i, c in zip(state["id"].to_pylist(), state["contained_in"].to_pylist(), strict=True)
        if c
    }
    from curate.dedup.common import keep_rank, read_keys

    rank = keep_rank(
        read_keys(mapped, cfg),
        mapped["id"].combine_chunks(),
        np.zeros(len(rows), np.int64),
        np.arange(len(rows)),
        cfg,
    )
    alive = np.array([i not in near_removed and sizes[i] > 0 for i in range(len(rows))])
    local = np.flatnonzero(alive)
    pos = {g: k for k, g in enumerate(local.tolist())}
    tp = np.array([(pos[a], pos[b]) for a, b in truth if alive[a] and alive[b]], np.int64).reshape(
        -1, 2
    )
    chosen = choose_containers(tp, rank[local])
    expected = {int(local[k]) for k in np.flatnonzero(chosen >= 0)}
    hit = len(expected & set(removed))
    print(
        f"near_dedup reduce over the map outputs: {t_off:.2f}s without containment, {t_on:.2f}s with; "
        f"{len(near_removed)} near duplicates removed, {len(removed)} contained removed "
        f"({sum(len(rows[i]['text'].encode()) for i in removed) / 1e6:.1f} MB)"
    )
    print(
        f"documents removed as contained vs the same rule on exact pairs: {len(expected)} expected, "
        f"recall {hit / max(len(expected), 1):.4f}, precision {hit / max(len(removed), 1):.4f}"
    )
    for lang in ("en", "ja"):
        names = {
            rows[i]["source"].split("/", 1)[1]: (
                i in removed,
                rows[removed[i]]["source"] if i in removed else "",
            )
            for i in range(len(rows))
            if rows[i]["source"].startswith(f"debian-reference-{lang}/")
        }
        print(
            f"  debian-reference-{lang}: "
            + ", ".join(
                f"{n} -> {c.split('/', 1)[1]}" if r else f"{n} kept"
                for n, (r, c) in sorted(names.items())
            )
        )


# --- memory --------------------------------------------------------------------------------


def sample_paragraphs() -> list[str]:
    """Paragraphs of real text from data/sample (rst, html, changelogs, fortunes)."""
    texts = [
        p.read_text(encoding="utf-8", errors="replace") for p in sorted(SAMPLE.rglob("*.rst.txt"))
    ]
    for p in sorted(SAMPLE.glob("html/**/*.html")):
        raw = re.sub(
            r"(?is)<(script|style)\b.*?</\1>", " ", p.read_text(encoding="utf-8", errors="replace")
        )
        texts.append(html.unescape(re.sub(r"<[^>]+>", " ", raw)))
    for p in sorted(SAMPLE.glob("meta/*/changelog*.gz")):
        texts.append(gzip.decompress(p.read_bytes()).decode("utf-8", "replace"))
    paragraphs = [q.strip() for t in texts for q in re.split(r"\n\s*\n", t)]
    return [q for q in paragraphs if len(q) > 80]


def generate(
    n_docs: int, n_parts: int, out: Path, seed: int = 0, chapters: float = 0.0
) -> list[str]:
    """n_docs documents of 3-12 real paragraphs drawn at random; 30% are perturbed copies and
    a ``chapters`` share are runs of consecutive paragraphs of an earlier document."""
    rng = random.Random(seed)
    paras = sample_paragraphs()
    per_part = -(-n_docs // n_parts)
    made: list[str] = []
    paths = []
    for p in range(n_parts):
        rows = []
        for k in range(per_part):
            i = p * per_part + k
            if i >= n_docs:
                break
            draw = rng.random()
            if made and draw < chapters:
                whole = rng.choice(made[-5000:]).split("\n\n")
                k = rng.randint(1, max(1, len(whole) - 1))
                first = rng.randint(0, len(whole) - k)
                text = "\n\n".join(whole[first : first + k])
            elif made and draw < chapters + 0.3:
                w = rng.choice(made[-5000:]).split(" ")
                rate = rng.uniform(0.0, 0.1)
                w = [x for x in w if rng.random() >= rate]
                text = " ".join(w)
            else:
                text = "\n\n".join(rng.sample(paras, rng.randint(3, 12)))
            made.append(text)
            rows.append(
                dict(
                    id=doc_id("gen", i),
                    text=text,
                    source="gen",
                    offset=i,
                    domain="web",
                    format="text",
                )
            )
        path = out / f"part-{p:05d}.parquet"
        write_bytes_atomic(parquet_bytes(docs_table(rows)), str(path))
        paths.append(str(path))
    return paths


def _vm_hwm_mib() -> float:
    """Peak RSS of this process image (VmHWM; unlike ru_maxrss, reset by exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(args: argparse.Namespace) -> None:
    """Run one phase and print its peak RSS (this process only)."""
    from curate.storage import read_parquet

    cfg = NearDedupConfig(verify=args.verify, containment=args.containment)
    parts = sorted(Path(args.dir).glob("part-*.parquet"))
    t0 = time.perf_counter()
    if args.phase == "generate":
        paths = generate(args.docs, args.parts, Path(args.dir), chapters=args.chapters)
        texts = [pa.parquet.read_table(p, columns=["text"])["text"] for p in paths]
        info = {
            "docs": sum(len(t) for t in texts),
            "text_mb": round(sum(t.nbytes for t in texts) / 1e6),
        }
    elif args.phase == "map":
        for p in parts:
            write_bytes_atomic(
                parquet_bytes(NEAR_DEDUP.map(read_parquet(str(p)), cfg)),
                str(p).replace("part-", "map-"),
            )
        info = {}
    else:
        state = NEAR_DEDUP.reduce(sorted(str(p) for p in Path(args.dir).glob("map-*.parquet")), cfg)
        info = {
            "state_rows": state.num_rows,
            "removed": state.num_rows - state["duplicate_of"].null_count,
            "contained": state.num_rows - state["contained_in"].null_count,
        }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "phase": args.phase,
                "verify": args.verify,
                "containment": args.containment,
                "ru_maxrss_mib": round(rss, 1),
                "vm_hwm_mib": round(_vm_hwm_mib(), 1),
                "seconds": round(time.perf_counter() - t0, 1),
                **info,
            }
        )
    )


def memory(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        gen = [
            "--phase",
            "generate",
            "--dir",
            tmp,
            "--docs",
            str(args.docs),
            "--parts",
            str(args.parts),
            "--chapters",
            str(args.chapters),
        ]
        print(_run_child(gen))
        print(f"{len(list(Path(tmp).glob('part-*.parquet')))} parts; {machine()}")
        driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"driver ru_maxrss {driver:.0f} MiB (children inherit it as a floor of theirs)")
        verifies = (True,) if args.verify_only else (False, True)
        for verify in verifies:
            flag = ["--verify"] if verify else []
            # the map as the stage runs it: with the sampled shingles containment reads
            print(_run_child(["--phase", "map", "--dir", tmp, "--containment", "0.8", *flag]))
            runs = ["0"] + [str(c) for c in args.with_containment]
            for c in runs:  # 0: containment off (the near-dedup figures)
                print(_run_child(["--phase", "reduce", "--dir", tmp, "--containment", c, *flag]))
            print(machine())


def _run_child(child_args: list[str]) -> str:
    cmd = [sys.executable, "-m", "bench.dedup", "_child", *child_args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{child_args} failed:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--docs", type=int, default=1000)
    t.add_argument("--repeat", type=int, default=2)
    cv = sub.add_parser("curve")
    cv.add_argument("--bands", type=int)
    cv.add_argument("--rows", type=int)
    m = sub.add_parser("memory")
    m.add_argument("--docs", type=int, default=100_000)
    m.add_argument("--parts", type=int, default=10)
    m.add_argument("--chapters", type=float, default=0.0, help="share of contained documents")
    m.add_argument(
        "--with-containment", type=float, nargs="*", default=[], help="also reduce with these"
    )
    m.add_argument("--verify-only", action="store_true", help="only verify: true (the default)")
    ct = sub.add_parser("containment")
    ct.add_argument("--threshold", type=float, default=0.8)
    ct.add_argument("--fn-weight", type=float, nargs="*", default=[0.5])
    ct.add_argument("--peer", action="store_true", help="also time datasketch's own index")
    c = sub.add_parser("_child")
    c.add_argument("--phase", choices=("generate", "map", "reduce"))
    c.add_argument("--docs", type=int, default=100_000)
    c.add_argument("--parts", type=int, default=10)
    c.add_argument("--dir")
    c.add_argument("--verify", action="store_true")
    c.add_argument("--chapters", type=float, default=0.0)
    c.add_argument("--containment", type=lambda v: float(v) or None, default=None)
    args = parser.parse_args(argv)
    commands = {
        "throughput": throughput,
        "curve": curve,
        "memory": memory,
        "containment": containment,
        "_child": _child,
    }
    commands[args.cmd](args)


if __name__ == "__main__":
    import pyarrow.parquet  # noqa: F401  (pa.parquet in memory())

    main()
