"""Scale benchmarks of the sharded dedup reduce.

``reduce``: a reduce-only simulation. Synthetic near-dedup map outputs (the columns the reduce
reads: id, MinHash signature, n_shingles) are generated in chunks on disk, with planted
duplicate clusters: a copy shares between one and half of its root's LSH bands with it and has
random values elsewhere. Then every bucket task (``NEAR_DEDUP.bucket``) and the components step
(``NEAR_DEDUP.components``) runs in its own process, whose peak RSS (VmHWM) is measured; the
state must hold exactly the planted clusters, each copy naming its root.

    python -m bench.scale reduce --docs 1000000 --parts 20 --buckets 8

The simulation uses ``bands`` LSH bands of ``rows`` rows (default 16 x 2: the band count of the
default config with verify, two rows so that 64-bit band keys of random signatures do not
collide), ``verify`` off (no shingles are stored) and containment off.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.dedup.minhash import NEAR_DEDUP, NearDedupConfig
from curate.storage import parquet_bytes, read_parquet, write_bytes_atomic

ROOT = Path(__file__).resolve().parents[1]


def sim_config(bands: int = 16, rows: int = 2, buckets: int | None = None) -> NearDedupConfig:
    """The near-dedup config the simulated map outputs are read with."""
    return NearDedupConfig(
        num_perm=bands * rows,
        bands=bands,
        rows=rows,
        verify=False,
        containment=None,
        priority=["order"],
        buckets=buckets,
    )


def planted_map_parts(
    n_docs: int,
    n_parts: int,
    out: Path,
    bands: int = 16,
    rows: int = 2,
    copy_share: float = 0.2,
    seed: int = 0,
) -> tuple[list[str], np.ndarray]:
    """Write ``n_parts`` near-dedup map outputs of ``n_docs`` synthetic documents (one chunk at
    a time); returns their paths and the planted root (global index, -1 for none) of every
    document. A ``copy_share`` of the documents are copies of a root from the previous part
    (or the same part, before it): the copy shares 1..bands/2 of the root's bands."""
    rng = np.random.default_rng(seed)
    num_perm = bands * rows
    per_part = -(-n_docs // n_parts)
    root_of = np.full(n_docs, -1, np.int64)
    paths: list[str] = []
    previous: tuple[int, np.ndarray] | None = None  # (first index, signatures) of the last part
    for p in range(n_parts):
        first, stop = p * per_part, min(n_docs, (p + 1) * per_part)
        m = stop - first
        if m <= 0:
            break
        sig = rng.integers(0, 2**32, (m, num_perm), dtype=np.uint32)
        is_copy = rng.random(m) < copy_share
        is_copy[0] = False
        copies = np.flatnonzero(is_copy)
        if previous is not None:
            pool_first, pool = previous
        else:
            pool_first, pool = first, sig
        # roots: documents that are not copies, from the pool, before the copy
        pool_roots = np.flatnonzero(root_of[pool_first : pool_first + len(pool)] < 0)
        if previous is None:
            pool_roots = pool_roots[~is_copy[pool_roots]]
        for c in copies.tolist():
            limit = len(pool_roots) if previous is not None else np.searchsorted(pool_roots, c)
            if limit == 0:
                continue
            r = int(pool_roots[rng.integers(0, limit)])
            shared = rng.choice(bands, size=int(rng.integers(1, bands // 2 + 1)), replace=False)
            for b in shared.tolist():
                sig[c, b * rows : (b + 1) * rows] = pool[r, b * rows : (b + 1) * rows]
            root_of[first + c] = pool_first + r
        ids = pa.array([f"d{i:011d}" for i in range(first, stop)])
        table = pa.table(
            {
                "id": ids,
                "signature": pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), num_perm),
                "n_shingles": pa.array(np.full(m, 100, np.int32)),
            }
        )
        path = out / f"map-{p:05d}.parquet"
        write_bytes_atomic(parquet_bytes(table), str(path))
        paths.append(str(path))
        previous = (first, sig)
    return paths, root_of


def planted_clusters_found(state: pa.Table, root_of: np.ndarray) -> dict[str, int | bool]:
    """Compare the state with the planted roots: every copy names its root, nothing else is
    removed."""
    ids = state["id"].to_numpy(zero_copy_only=False)
    dup = state["duplicate_of"].to_numpy(zero_copy_only=False)
    removed = {int(i[1:]): int(d[1:]) for i, d in zip(ids, dup, strict=True) if d is not None}
    planted = {int(i): int(r) for i, r in enumerate(root_of) if r >= 0}
    missed = sum(1 for c, r in planted.items() if removed.get(c) != r)
    extra = sum(1 for c in removed if c not in planted)
    return {
        "planted_copies": len(planted),
        "removed": len(removed),
        "missed": missed,
        "extra": extra,
        "exact": missed == 0 and extra == 0,
    }


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(args: argparse.Namespace) -> None:
    """One bucket task, or the components step, in this process; prints its peak RSS."""
    cfg = sim_config(args.bands, args.rows)
    folder = Path(args.dir)
    urls = sorted(str(p) for p in folder.glob("map-*.parquet"))
    t0 = time.perf_counter()
    info: dict = {}
    if args.phase == "bucket":
        edges = NEAR_DEDUP.bucket(urls, cfg, args.bucket, args.buckets)
        write_bytes_atomic(parquet_bytes(edges), str(folder / f"edges-{args.bucket:05d}.parquet"))
        info = {"bucket": args.bucket, "edges": edges.num_rows}
    else:
        edges = sorted(str(p) for p in folder.glob("edges-*.parquet"))
        state = NEAR_DEDUP.components(urls, edges, cfg)
        write_bytes_atomic(parquet_bytes(state), str(folder / "state.parquet"))
        info = {"state_rows": state.num_rows}
    print(
        json.dumps(
            {
                "phase": args.phase,
                **info,
                "seconds": round(time.perf_counter() - t0, 1),
                "vm_hwm_mib": round(_vm_hwm_mib(), 1),
            }
        )
    )


def _run_child(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bench.scale", "_child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def reduce_sim(args: argparse.Namespace) -> None:
    print(f"machine: {uptime()}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        urls, root_of = planted_map_parts(args.docs, args.parts, Path(tmp), args.bands, args.rows)
        gen_s = time.perf_counter() - t0
        map_bytes = sum(Path(u).stat().st_size for u in urls)
        print(
            f"generated {args.docs} docs in {len(urls)} parts, {map_bytes / 1e6:.0f} MB, {gen_s:.0f} s"
        )
        common = ["--dir", tmp, "--bands", str(args.bands), "--rows", str(args.rows)]
        common += ["--buckets", str(args.buckets)]
        tasks = []
        for b in range(args.buckets):
            tasks.append(_run_child(["--phase", "bucket", "--bucket", str(b), *common]))
            print(json.dumps(tasks[-1]))
        comp = _run_child(["--phase", "components", *common])
        print(json.dumps(comp))
        state = read_parquet(str(Path(tmp) / "state.parquet"))
        found = planted_clusters_found(state, root_of)
        edge_bytes = sum(p.stat().st_size for p in Path(tmp).glob("edges-*.parquet"))
        bucket_s = sum(t["seconds"] for t in tasks)
        summary = {
            "docs": args.docs,
            "buckets": args.buckets,
            "bands": args.bands,
            "rows": args.rows,
            "max_bucket_rss_mib": max(t["vm_hwm_mib"] for t in tasks),
            "components_rss_mib": comp["vm_hwm_mib"],
            "bucket_seconds_total": round(bucket_s, 1),
            "components_seconds": comp["seconds"],
            "us_per_doc_buckets": round(1e6 * bucket_s / args.docs, 2),
            "us_per_doc_components": round(1e6 * comp["seconds"] / args.docs, 2),
            "map_bytes_per_doc": round(map_bytes / args.docs, 1),
            "edge_bytes_per_doc": round(edge_bytes / args.docs, 2),
            **found,
        }
        print(json.dumps(summary))
    print(f"machine: {uptime()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reduce", help="reduce-only simulation with planted clusters")
    r.add_argument("--docs", type=int, default=1_000_000)
    r.add_argument("--parts", type=int, default=20)
    r.add_argument("--buckets", type=int, default=8)
    r.add_argument("--bands", type=int, default=16)
    r.add_argument("--rows", type=int, default=2)
    r.add_argument("--tmp", default=None, help="folder for the generated files")
    c = sub.add_parser("_child")
    c.add_argument("--phase", choices=["bucket", "components"], required=True)
    c.add_argument("--dir", required=True)
    c.add_argument("--bucket", type=int, default=0)
    c.add_argument("--buckets", type=int, default=1)
    c.add_argument("--bands", type=int, default=16)
    c.add_argument("--rows", type=int, default=2)
    args = parser.parse_args(argv)
    {"reduce": reduce_sim, "_child": _child}[args.cmd](args)


if __name__ == "__main__":
    main()
