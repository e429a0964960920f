"""Dedup benchmarks on real Debian documents.

    throughput  MinHash signatures docs/s/core: sluice ``near_dedup`` map (vectorised) vs
                datatrove 0.10.1 ``MinhashDedupSignature`` (get_shingles + get_signature) vs
                datasketch ``MinHash.update`` per shingle; same documents, same process.
    curve       precision/recall of near_dedup on the llvm-{13,14,15,16}-doc rst sources against
                exact Jaccard of word 5-gram sets over all pairs (sparse incidence product).
    memory      peak RSS (ru_maxrss) of map and of reduce, each in its own subprocess, over
                100k documents sampled and perturbed from data/sample text.

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


def generate(n_docs: int, n_parts: int, out: Path, seed: int = 0) -> list[str]:
    """n_docs documents of 3-12 real paragraphs drawn at random; 30% are perturbed copies."""
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
            if made and rng.random() < 0.3:
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

    cfg = NearDedupConfig(verify=args.verify)
    parts = sorted(Path(args.dir).glob("part-*.parquet"))
    t0 = time.perf_counter()
    if args.phase == "generate":
        paths = generate(args.docs, args.parts, Path(args.dir))
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
        }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "phase": args.phase,
                "verify": args.verify,
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
        ]
        print(_run_child(gen))
        print(f"{len(list(Path(tmp).glob('part-*.parquet')))} parts; {machine()}")
        driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"driver ru_maxrss {driver:.0f} MiB (children inherit it as a floor of theirs)")
        for verify in (False, True):
            for phase in ("map", "reduce"):
                print(
                    _run_child(["--phase", phase, "--dir", tmp] + (["--verify"] if verify else []))
                )


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
    c = sub.add_parser("_child")
    c.add_argument("--phase", choices=("generate", "map", "reduce"))
    c.add_argument("--docs", type=int, default=100_000)
    c.add_argument("--parts", type=int, default=10)
    c.add_argument("--dir")
    c.add_argument("--verify", action="store_true")
    args = parser.parse_args(argv)
    {"throughput": throughput, "curve": curve, "memory": memory, "_child": _child}[args.cmd](args)


if __name__ == "__main__":
    import pyarrow.parquet  # noqa: F401  (pa.parquet in memory())

    main()
