"""Scale benchmarks of the sharded dedup reduce.

``reduce``: a reduce-only simulation. Synthetic near-dedup map outputs are generated part by
part on disk (one process per part, seeded per part), with planted duplicate clusters: 20% of
the documents are copies of a root (a document that is no copy) of the previous part (in
part 0: before it in the same part), sharing 1..bands/2 of its LSH bands, random elsewhere. Then every bucket task
(``NEAR_DEDUP.bucket``) and the components step (``NEAR_DEDUP.components``, its state written
as the plan writes it) runs in its own process, ``--jobs`` at a time, whose wall, CPU and
peak RSS (VmHWM) are measured; the state must hold exactly the planted clusters, each copy
naming its root. Three ways to make the buckets' input:

- ``--direct``: the shuffle's output itself, sorted band keys per part (random 64-bit keys, a
  copy holding its root's in the shared bands) beside a map output of ids and n_shingles: no
  signatures and no shuffle, ~255 bytes per document on disk (what lets 10^8 documents fit);
- default: signatures (id, MinHash signature, n_shingles: 142 B/doc), then the map's side of
  the key-range shuffle (``NEAR_DEDUP.shuffle``: one process per part writes its band keys
  sorted by key) and every bucket task reads only its range;
- ``--no-shuffle``: signatures, every bucket task reading and hashing every part's.

    python -m bench.scale reduce --docs 1000000 --parts 10 --buckets 8 --direct --jobs 2

``compare``: the direct mode against the signature path on the same planted clusters (the
same states?), in one process.

``pipeline``: the whole job (``configs/default.yaml``'s stages) on a >= 1 GB corpus of real
text, ``sluice run --local`` against Prefect + Ray with ``--cpus`` CPUs: wall, CPU of the
process tree, seconds and MB/s/core per step, the peak RSS of every process (Ray workers
included: sampled every 0.5 s), the peak RSS of each step's biggest call and of the driver
during each step (``timings.json`` ``peak_rss_mib``: each call's own VmHWM, reset before it,
``curate.memory``) and whether the shards are byte-identical. The corpus is the
full Debian tier grown with re-mixed real paragraphs (:func:`grow_corpus`). Needs a quiet
machine and a Prefect server (``sluice server --background``)::

    PYTHONPATH=. python -m bench.corpus --tier full --out /work/corpus/full
    python -m bench.scale pipeline --corpus /work/corpus/full --out /tmp/scale --cpus 2

The simulation uses ``bands`` LSH bands of ``rows`` rows (default 16 x 2: the band count of the
default config with verify, two rows so that 64-bit band keys of random signatures do not
collide), ``verify`` off (no shingles are stored) and containment off.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.common import DUPLICATE_OF
from curate.dedup.minhash import N_SHINGLES, NEAR_DEDUP, SIGNATURE, NearDedupConfig, sorted_keys
from curate.plan import SHUFFLE_ROW_GROUP
from curate.storage import (
    as_table,
    parquet_bytes,
    read_parquet,
    write_bytes_atomic,
    write_table_atomic,
)

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


class Planted(NamedTuple):
    """One part's planted clusters: which of its rows are copies, of which root, sharing which
    bands."""

    first: int  # global index of the part's first document
    size: int
    copies: np.ndarray  # rows (in the part) of the copies
    roots: np.ndarray  # global index of each copy's root
    root_rows: np.ndarray  # ... its row in the pool's part (this part for part 0, else the last)
    shared: np.ndarray  # (copies, bands) bool: the bands a copy shares with its root


def _part_span(p: int, n_docs: int, n_parts: int) -> tuple[int, int]:
    per_part = -(-n_docs // n_parts)
    return p * per_part, max(0, min(n_docs, (p + 1) * per_part) - p * per_part)


def _copy_mask(p: int, m: int, copy_share: float, seed: int) -> np.ndarray:
    is_copy = np.random.default_rng([seed, p, 1]).random(m) < copy_share
    is_copy[:1] = False
    return is_copy


def plant(
    p: int, n_docs: int, n_parts: int, bands: int = 16, copy_share: float = 0.2, seed: int = 0
) -> Planted:
    """Part ``p``'s planted clusters (seeded per part, so that parts are generated on their
    own): a ``copy_share`` of its documents are copies of a root (a document that is no copy)
    of the previous part (in part 0: of the same part, before the copy), sharing 1..bands/2
    of its bands."""
    first, m = _part_span(p, n_docs, n_parts)
    rng = np.random.default_rng([seed, p, 1])
    is_copy = rng.random(m) < copy_share
    is_copy[:1] = False
    copies = np.flatnonzero(is_copy)
    if p == 0:
        pool_first, pool = first, np.flatnonzero(~is_copy)
        limit = np.searchsorted(pool, copies)  # the roots before the copy (>= 1: row 0)
    else:
        pool_first, prev_m = _part_span(p - 1, n_docs, n_parts)
        pool = np.flatnonzero(~_copy_mask(p - 1, prev_m, copy_share, seed))
        limit = np.full(len(copies), len(pool))
    pick = np.minimum((rng.random(len(copies)) * limit).astype(np.int64), limit - 1)
    root_rows = pool[pick]
    k = rng.integers(1, bands // 2 + 1, len(copies))
    position = np.argsort(np.argsort(rng.random((len(copies), bands)), axis=1), axis=1)
    return Planted(first, m, copies, pool_first + root_rows, root_rows, position < k[:, None])


def _base_values(p: int, n_docs: int, n_parts: int, width: int, kind: str, seed: int) -> np.ndarray:
    """Part ``p``'s random values before any copying: ``(docs, width)`` uint32 signature
    values (``kind`` "signatures") or uint64 band keys ("keys")."""
    _, m = _part_span(p, n_docs, n_parts)
    rng = np.random.default_rng([seed, p, 0])
    if kind == "keys":
        return rng.bit_generator.random_raw((m, width)).astype(np.uint64)
    return rng.integers(0, 2**32, (m, width), dtype=np.uint32)


def write_planted_part(
    p: int,
    n_docs: int,
    n_parts: int,
    out: Path,
    bands: int = 16,
    rows: int = 2,
    copy_share: float = 0.2,
    seed: int = 0,
    direct: bool = False,
) -> tuple[str, Planted]:
    """Write part ``p`` of the simulated near-dedup map outputs with its planted clusters;
    returns its path. Signatures (``direct`` False): ``map-NNNNN.parquet`` holds id,
    ``bands * rows`` signature values, n_shingles; a copy holds its root's values in the
    shared bands. Band keys (``direct``): the map output holds id and n_shingles, and
    ``map-NNNNN.keys.parquet`` the part's band keys sorted by key as the shuffle writes them
    (:func:`~curate.dedup.minhash.sorted_keys`; random 64-bit keys, a copy's shared bands
    holding its root's): no signatures, no shuffle."""
    planted = plant(p, n_docs, n_parts, bands, copy_share, seed)
    kind, width = ("keys", bands) if direct else ("signatures", bands * rows)
    values = _base_values(p, n_docs, n_parts, width, kind, seed)
    pool = values if p == 0 else _base_values(p - 1, n_docs, n_parts, width, kind, seed)
    shared = planted.shared if direct else np.repeat(planted.shared, rows, axis=1)
    c = planted.copies
    values[c] = np.where(shared, pool[planted.root_rows], values[c])  # roots are no copies
    del pool
    first, m = planted.first, planted.size
    columns = {"id": pa.array([f"d{i:011d}" for i in range(first, first + m)])}
    if not direct:
        columns[SIGNATURE] = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), width)
    columns[N_SHINGLES] = pa.array(np.full(m, 100, np.int32))
    path = out / f"map-{p:05d}.parquet"
    write_bytes_atomic(parquet_bytes(pa.table(columns)), str(path))
    if direct:
        keys = sorted_keys(values, np.ones(m, bool))
        del values
        keys_path = str(path).replace(".parquet", ".keys.parquet")
        write_bytes_atomic(parquet_bytes(keys, row_group_size=SHUFFLE_ROW_GROUP), keys_path)
    return str(path), planted


def planted_map_parts(
    n_docs: int,
    n_parts: int,
    out: Path,
    bands: int = 16,
    rows: int = 2,
    copy_share: float = 0.2,
    seed: int = 0,
    direct: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Write ``n_parts`` simulated map outputs (:func:`write_planted_part`) of ``n_docs``
    documents; returns their paths and the planted root (global index, -1 for none) of every
    document."""
    root_of = np.full(n_docs, -1, np.int64)
    paths = []
    for p in range(n_parts):
        if _part_span(p, n_docs, n_parts)[1] == 0:
            break
        path, planted = write_planted_part(
            p, n_docs, n_parts, out, bands, rows, copy_share, seed, direct
        )
        root_of[planted.first + planted.copies] = planted.roots
        paths.append(path)
    return paths, root_of


def _doc_numbers(column: pa.ChunkedArray) -> np.ndarray:
    """``d00000000012`` -> 12 (null -> -1)."""
    numbers = pc.cast(pc.utf8_slice_codeunits(column, 1), pa.int64())
    return numbers.fill_null(-1).to_numpy().astype(np.int64)


def compare_planted(state: pa.Table, copies: np.ndarray, roots: np.ndarray) -> dict:
    """Compare the state with the planted clusters (``copies``: sorted global indices, each
    with its root): every copy names its root, nothing else is removed."""
    ids, dup = _doc_numbers(state["id"]), _doc_numbers(state[DUPLICATE_OF])
    removed = dup >= 0
    c, r = ids[removed], dup[removed]
    order = np.argsort(c, kind="stable")
    c, r = c[order], r[order]
    at = np.minimum(np.searchsorted(c, copies), max(len(c) - 1, 0))
    hit = (c[at] == copies) & (r[at] == roots) if len(c) else np.zeros(len(copies), bool)
    missed = int(len(copies) - hit.sum())
    extra = int(len(c) - np.isin(c, copies).sum())
    return {
        "planted_copies": len(copies),
        "removed": len(c),
        "missed": missed,
        "extra": extra,
        "exact": missed == 0 and extra == 0,
    }


def planted_clusters_found(state: pa.Table, root_of: np.ndarray) -> dict[str, int | bool]:
    """Compare the state with the planted roots (``root_of``: -1 for none)."""
    copies = np.flatnonzero(root_of >= 0)
    return compare_planted(state, copies, root_of[copies])


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(args: argparse.Namespace) -> None:
    """One task in this process (a part's generation or shuffle, a bucket task, or the
    components step); prints its wall and CPU seconds and its peak RSS."""
    cfg = sim_config(args.bands, args.rows)
    folder = Path(args.dir)
    t0, c0 = time.perf_counter(), time.process_time()
    info: dict = {}
    if args.phase == "generate":
        path, planted = write_planted_part(
            args.bucket, args.docs, args.parts, folder, args.bands, args.rows,
            args.copy_share, args.seed, args.direct,
        )  # fmt: skip
        found = np.stack([planted.first + planted.copies, planted.roots])
        np.save(folder / f"planted-{args.bucket:05d}.npy", found)
        info = {"part": args.bucket, "docs": planted.size, "copies": len(planted.copies)}
    urls = sorted(str(p) for p in folder.glob("map-*[0-9].parquet"))
    if args.phase == "shuffle":  # the map's side: one part's keys sorted by key
        url = urls[args.bucket]
        keys = NEAR_DEDUP.shuffle(read_parquet(url), cfg)
        out = url.replace(".parquet", ".keys.parquet")
        write_bytes_atomic(parquet_bytes(keys, row_group_size=SHUFFLE_ROW_GROUP), out)
        info = {"part": args.bucket, "keys": keys.num_rows}
    elif args.phase == "bucket":
        shuffled = {}
        if args.shuffle:  # read only this bucket's key range of every part
            shuffled["keys"] = [u.replace(".parquet", ".keys.parquet") for u in urls]
        edges = NEAR_DEDUP.bucket(urls, cfg, args.bucket, args.buckets, **shuffled)
        write_bytes_atomic(parquet_bytes(edges), str(folder / f"edges-{args.bucket:05d}.parquet"))
        info = {"bucket": args.bucket, "edges": edges.num_rows}
    elif args.phase == "components":
        edges = sorted(str(p) for p in folder.glob("edges-*.parquet"))
        state = NEAR_DEDUP.components(urls, edges, cfg)  # written as the plan writes it
        info = write_table_atomic(state, str(folder / "state.parquet"))
    print(
        json.dumps(
            {
                "phase": args.phase,
                **info,
                "seconds": round(time.perf_counter() - t0, 1),
                "cpu_s": round(time.process_time() - c0, 1),
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


def _utc() -> str:
    return time.strftime("%H:%M:%S", time.gmtime())


def _phase(name: str, task_args: list[list[str]], jobs: int, log: dict) -> list[dict]:
    """Run one phase's tasks, ``jobs`` processes at a time; record its figures in ``log``."""
    print(f"{_utc()} UTC {name}: {len(task_args)} tasks; {uptime()}", flush=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(_run_child, task_args))
    wall = time.perf_counter() - t0
    seconds = [r["seconds"] for r in results]
    cpu = [r["cpu_s"] for r in results]
    rss = [r["vm_hwm_mib"] for r in results]
    log[name] = {
        "tasks": len(results),
        "phase_wall_s": round(wall, 1),
        "task_wall_s": [min(seconds), max(seconds), round(sum(seconds), 1)],
        "task_cpu_s": [min(cpu), max(cpu), round(sum(cpu), 1)],
        "peak_rss_mib": [min(rss), max(rss)],
    }
    print(json.dumps({name: log[name]}), flush=True)
    if len(results) <= 8 or name == "bucket":
        for r in results:
            print(json.dumps(r), flush=True)
    return results


def reduce_sim(args: argparse.Namespace) -> None:
    print(f"{_utc()} UTC start; machine: {uptime()}", flush=True)
    n_parts = sum(1 for p in range(args.parts) if _part_span(p, args.docs, args.parts)[1])
    with contextlib.ExitStack() as cleanup:
        tmp = tempfile.mkdtemp(dir=args.tmp)
        if not args.keep:
            cleanup.callback(shutil.rmtree, tmp, True)
        folder = Path(tmp)
        common = ["--dir", tmp, "--bands", str(args.bands), "--rows", str(args.rows)]
        common += ["--buckets", str(args.buckets)]
        gen = [*common, "--docs", str(args.docs), "--parts", str(args.parts)]
        gen += ["--copy-share", str(args.copy_share), "--seed", str(args.seed)]
        gen += ["--direct"] if args.direct else []
        log: dict = {}
        _phase(
            "generate",
            [["--phase", "generate", "--bucket", str(p), *gen] for p in range(n_parts)],
            args.jobs,
            log,
        )  # noqa: E501
        if args.shuffle or args.direct:
            common += ["--shuffle"]
        if args.shuffle and not args.direct:
            parts = [["--phase", "shuffle", "--bucket", str(p), *common] for p in range(n_parts)]
            _phase("shuffle", parts, args.jobs, log)
        buckets = [["--phase", "bucket", "--bucket", str(b), *common] for b in range(args.buckets)]
        _phase("bucket", buckets, args.jobs, log)
        _phase("components", [["--phase", "components", *common]], 1, log)
        print(f"{_utc()} UTC check; machine: {uptime()}", flush=True)

        def size(pattern: str) -> int:
            return sum(p.stat().st_size for p in folder.glob(pattern))

        planted = [np.load(p) for p in sorted(folder.glob("planted-*.npy"))]
        copies = np.concatenate([x[0] for x in planted])
        roots = np.concatenate([x[1] for x in planted])
        del planted
        found = compare_planted(read_parquet(str(folder / "state.parquet")), copies, roots)
        n = args.docs
        summary = {
            "docs": n,
            "parts": n_parts,
            "buckets": args.buckets,
            "bands": args.bands,
            "rows": args.rows,
            "mode": "direct band keys"
            if args.direct
            else "signatures" + (" + shuffle" if args.shuffle else ""),
            "jobs": args.jobs,
            "map_bytes_per_doc": round(size("map-*[0-9].parquet") / n, 1),
            "keys_bytes_per_doc": round(size("map-*.keys.parquet") / n, 1),
            "edge_bytes_per_doc": round(size("edges-*.parquet") / n, 2),
            "state_bytes_per_doc": round(size("state.parquet") / n, 2),
            "cpu_us_per_doc": {k: round(1e6 * v["task_cpu_s"][2] / n, 2) for k, v in log.items()},
            **found,
        }
        print(json.dumps({"phases": log, "summary": summary}, indent=1))
    print(f"{_utc()} UTC end; machine: {uptime()}", flush=True)


def compare_modes(args: argparse.Namespace) -> None:
    """The direct band-key mode against the signature path (signatures, the shuffle, the
    buckets, the components) on the same planted clusters, in this process: equal states?"""
    cfg = sim_config(args.bands, args.rows)
    print(f"{_utc()} UTC start; machine: {uptime()}", flush=True)
    states, found = {}, {}
    for direct in (False, True):
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            urls, root_of = planted_map_parts(
                args.docs, args.parts, Path(tmp), args.bands, args.rows, args.copy_share,
                args.seed, direct,
            )  # fmt: skip
            keys = [u.replace(".parquet", ".keys.parquet") for u in urls]
            if not direct:
                for url, out in zip(urls, keys, strict=True):
                    shuffled = NEAR_DEDUP.shuffle(read_parquet(url), cfg)
                    write_bytes_atomic(
                        parquet_bytes(shuffled, row_group_size=SHUFFLE_ROW_GROUP), out
                    )
            edges = [
                NEAR_DEDUP.bucket(urls, cfg, b, args.buckets, keys=keys)
                for b in range(args.buckets)
            ]  # noqa: E501
            states[direct] = as_table(NEAR_DEDUP.components(urls, edges, cfg))
            found[direct] = planted_clusters_found(states[direct], root_of)
    print(json.dumps({"signatures": found[False], "direct": found[True]}))
    print(f"states equal: {states[False].equals(states[True])} ({states[True].num_rows} rows)")
    print(f"{_utc()} UTC end; machine: {uptime()}", flush=True)


# --- the whole pipeline: --local vs Prefect + Ray on a >= 1 GB corpus -------------------------

INPUTS = [  # (folder under the corpus, format, domain), as configs/default.yaml reads the sample
    ("html", "html", "web"),
    ("pdf", "pdf", "pdf"),
    ("code", "code", "code"),
    ("fortune", "fortune", "fortune"),
    ("prose", "auto", "prose"),
    ("rst", "text", "rst"),
    ("remix/html", "html", "web"),
    ("remix/text", "text", "rst"),
]


def _paragraphs(corpus: Path) -> list[str]:
    """Every paragraph (blank-line separated, 200 bytes to 4 kB) of the corpus's plain-text
    documents (``rst``, ``meta``), in file order."""
    out: list[str] = []
    for kind in ("rst", "meta"):
        for f in sorted((corpus / kind).rglob("*")):
            if f.is_file() and f.suffix not in (".gz", ".dz", ".pdf"):
                text = f.read_text(errors="replace")
                out += [p.strip() for p in text.split("\n\n") if 200 <= len(p.strip()) <= 4000]
    return out


def grow_corpus(corpus: Path, out: Path, target_mb: float, seed: int = 0) -> dict[str, float]:
    """``out``: the corpus (symlinked) plus re-mixed documents until it holds ``target_mb`` MB.
    A re-mixed document is 20-60 real paragraphs drawn (seeded, deterministic) from the
    corpus's plain-text documents, written alternately as text (``remix/text``) and as an HTML
    page of ``<p>`` elements (``remix/html``, so extraction does real work): every paragraph
    is real text, no document is a near copy of another (each draws from the whole pool)."""
    out.mkdir(parents=True, exist_ok=True)
    for folder, _, _ in INPUTS:
        if not folder.startswith("remix") and (corpus / folder).exists():
            link = out / folder
            if not link.exists():
                link.symlink_to((corpus / folder).resolve())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    pool = _paragraphs(corpus)
    if not pool:
        raise ValueError(f"no paragraphs of 200 B - 4 kB in {corpus}/rst or /meta")
    rng = np.random.default_rng(seed)
    n = 0
    while size < target_mb * 1e6:
        picks = rng.integers(0, len(pool), int(rng.integers(20, 61)))
        paras = [pool[i] for i in picks.tolist()]
        if n % 2:
            body = "".join(f"<p>{html.escape(p)}</p>\n" for p in paras)
            data = f"<html><head><title>remix {n}</title></head><body>\n{body}</body></html>\n"
            path = out / "remix" / "html" / f"{n // 1000:04d}" / f"doc-{n:07d}.html"
        else:
            data = "\n\n".join(paras) + "\n"
            path = out / "remix" / "text" / f"{n // 1000:04d}" / f"doc-{n:07d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data)
        size += path.stat().st_size
        n += 1
    return {"mb": size / 1e6, "remixed_docs": n, "paragraphs": len(pool)}


def pipeline_config(corpus: Path, path: Path, bytes_per_part: int) -> Path:
    """The default job's config with the grown corpus as its inputs."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    cfg["name"] = "scale"
    cfg["inputs"] = [
        {"path": str(corpus / folder), "format": fmt, "domain": domain}
        for folder, fmt, domain in INPUTS
        if (corpus / folder).exists()
    ]
    cfg["parts"] = {"files_per_part": 4096, "bytes_per_part": bytes_per_part}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


_TICK = os.sysconf("SC_CLK_TCK")


def _tree_rss(root: int) -> dict[int, tuple[str, float, float]]:
    """(command, RSS MiB, CPU seconds so far) of ``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[str, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        ppid = int(fields.get("PPid", "0").strip())
        children.setdefault(ppid, []).append(int(d.name))
        rss = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(stat[11]) + int(stat[12])) / _TICK  # utime + stime
        except (OSError, IndexError, ValueError):
            cpu = 0.0
        info[int(d.name)] = (cmd[:80], rss, cpu)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in info:
            out[pid] = info[pid]
        todo += children.get(pid, [])
    return out


def timed_run(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``: wall seconds, CPU seconds of its process tree, and the peak RSS of each of
    its processes (sampled every 0.5 s; a Ray worker's peak covers the tasks it ran)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    peak: dict[int, tuple[str, float]] = {}
    cpu: dict[int, float] = {}  # the last CPU seconds seen of every process of the tree
    while proc.poll() is None:
        for pid, (name, rss, used) in _tree_rss(proc.pid).items():
            if rss > peak.get(pid, ("", 0.0))[1]:
                peak[pid] = (name, rss)
            cpu[pid] = used
        time.sleep(0.5)
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed:\n{output[-3000:]}")
    top = sorted(peak.values(), key=lambda x: -x[1])
    return {
        "wall_s": round(wall, 1),
        "children_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        # Ray's workers are not waited for by the driver: their CPU is only in this sum (up to
        # the last sample, 0.5 s before each process ended)
        "tree_cpu_s_sampled": round(sum(cpu.values()), 1),
        "max_rss_mib": round(top[0][1], 1) if top else None,
        "processes_over_2gb": [n for n, r in top if r > 2048],
        "top_rss": [(n, round(r)) for n, r in top[:8]],
    }


def pipeline_bench(args: argparse.Namespace) -> None:
    """``--local`` and Prefect + Ray (``--cpus``) on the grown corpus: wall, CPU, per step."""
    out = Path(args.out)
    print(f"machine: {uptime()}  ({os.cpu_count()} CPUs)")
    corpus = out / "corpus"
    grown = grow_corpus(Path(args.corpus), corpus, args.grow_to_mb)
    print(json.dumps({"corpus": str(corpus), **grown}))
    config = pipeline_config(corpus.resolve(), out / "scale.yaml", args.bytes_per_part)
    env = {
        **os.environ,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "SLUICE_HOME": str(out / "home"),
    }
    sluice = [sys.executable, "-m", "flows.cli"]
    results = {}
    for name in args.runs:
        run_dir = out / "runs" / name
        cmd = [*sluice, "run", "--config", str(config), "--set", f"run_dir={run_dir}"]
        if name == "local":
            cmd.append("--local")
        else:
            cmd += ["--set", f"ray.num_cpus={args.cpus}", "--set", f"prefect.api_url={args.api}"]
            cmd += ["--set", f"prefect.parts_per_task={args.parts_per_task}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = timed_run(cmd, env)
        r["children_cpu_s"] = round(r["children_cpu_s"] - before.ru_utime - before.ru_stime, 1)
        recorded = json.loads((run_dir / "timings.json").read_text())
        r["steps_s"] = recorded["steps"]
        # per step: the peak RSS of its biggest call (each call's own: curate.memory) and of
        # the driver meanwhile
        r["peak_rss_mib"] = recorded.get("peak_rss_mib", {})
        tasks = [v for v in r["peak_rss_mib"].get("tasks", {}).values() if v is not None]
        r["max_task_rss_mib"] = max(tasks, default=None)
        r["max_driver_rss_mib"] = max(
            (v for v in r["peak_rss_mib"].get("driver", {}).values() if v is not None),
            default=None,
        )
        results[name] = r
        print(json.dumps({name: r}))
    mb = grown["mb"]
    if len(results) == 2:
        local, ray = results["local"], results["ray"]
        print(
            f"| step | --local s | Ray s | Ray MB/s/core ({args.cpus} cores) | speed-up "
            "| peak RSS MiB of a call: --local | Ray | Ray driver |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")

        def peak(run: dict, kind: str, step: str) -> str:
            v = run["peak_rss_mib"].get(kind, {}).get(step)
            return "" if v is None else f"{v:.0f}"

        for step, ls in local["steps_s"].items():
            rs = ray["steps_s"].get(step, float("nan"))
            rate = mb / (rs * args.cpus) if rs else float("nan")
            print(
                f"| {step} | {ls:.1f} | {rs:.1f} | {rate:.2f} | {ls / rs if rs else 0:.2f}x "
                f"| {peak(local, 'tasks', step)} | {peak(ray, 'tasks', step)} "
                f"| {peak(ray, 'driver', step)} |"
            )
        print(
            f"| report | | | | | {peak(local, 'driver', 'report')} | | {peak(ray, 'driver', 'report')} |"
        )
        for name, run in results.items():
            print(
                f"{name}: peak RSS of the biggest call {run['max_task_rss_mib']} MiB, of the "
                f"driver during a step or the report {run['max_driver_rss_mib']} MiB "
                f"(goal <= 2048); processes over 2 GB (sampled): {run['processes_over_2gb']}; "
                f"CPU of the process tree {run['tree_cpu_s_sampled']} s"
            )
        print(
            f"whole run: --local {local['wall_s']} s, Ray {ray['wall_s']} s: "
            f"{local['wall_s'] / ray['wall_s']:.2f}x (goal >= 1.7x); "
            f"{mb / (ray['wall_s'] * args.cpus):.2f} MB/s/core on Ray"
        )
        # done.json is the step's marker (it records the run's own paths and times)
        ray_shards = out / "runs" / "ray" / "shards"
        differ = [
            str(p.relative_to(ray_shards))
            for p in sorted(ray_shards.rglob("*"))
            if p.is_file()
            and p.name != "done.json"
            and (out / "runs" / "local" / "shards" / p.relative_to(ray_shards)).read_bytes()
            != p.read_bytes()
        ]
        print(f"shards and manifest byte-identical: {not differ} {differ or ''}")
    print(f"machine: {uptime()}")


def _folder(path: str) -> str:
    """``path``, made if absent (the generated files go in a fresh folder inside it)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def _simulation_options(parser: argparse.ArgumentParser, parts: int) -> None:
    """The options of a simulated corpus (``reduce`` and ``compare``)."""
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=parts)
    parser.add_argument("--buckets", type=int, default=8)
    parser.add_argument("--bands", type=int, default=16)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument(
        "--tmp", type=_folder, default=None, help="folder for the generated files (made if absent)"
    )
    parser.add_argument("--copy-share", type=float, default=0.2, help="share of planted copies")
    parser.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reduce", help="reduce-only simulation with planted clusters")
    _simulation_options(r, parts=20)
    r.add_argument("--jobs", type=int, default=1, help="task processes at a time")
    r.add_argument("--keep", action="store_true", help="keep the generated files")
    r.add_argument(
        "--direct",
        action="store_true",
        help="generate the shuffle's sorted band keys directly (no signatures, no shuffle)",
    )
    r.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        help="bucket tasks read every part's signatures (no key-range shuffle)",
    )
    m = sub.add_parser("compare", help="direct band keys vs the signature path: equal states?")
    _simulation_options(m, parts=10)
    q = sub.add_parser(
        "pipeline",
        help="--local vs Prefect + Ray on a >= 1 GB corpus (run on a quiet machine)",
    )
    q.add_argument("--corpus", required=True, help="python -m bench.corpus --tier full --out DIR")
    q.add_argument("--out", required=True, help="work folder (the grown corpus, the runs)")
    q.add_argument("--grow-to-mb", type=float, default=1100)
    q.add_argument("--bytes-per-part", type=int, default=32_000_000)
    q.add_argument("--cpus", type=int, default=2)
    q.add_argument("--parts-per-task", default="all", help="prefect.parts_per_task: all or N")
    q.add_argument(
        "--api", default="http://127.0.0.1:4200/api", help="a Prefect API (`sluice server`)"
    )
    q.add_argument("--runs", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    c = sub.add_parser("_child")
    c.add_argument(
        "--phase", choices=["generate", "shuffle", "bucket", "components"], required=True
    )
    c.add_argument("--shuffle", action="store_true")
    c.add_argument("--direct", action="store_true")
    c.add_argument("--docs", type=int, default=0)
    c.add_argument("--parts", type=int, default=1)
    c.add_argument("--copy-share", type=float, default=0.2)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--dir", required=True)
    c.add_argument("--bucket", type=int, default=0)
    c.add_argument("--buckets", type=int, default=1)
    c.add_argument("--bands", type=int, default=16)
    c.add_argument("--rows", type=int, default=2)
    args = parser.parse_args(argv)
    {
        "reduce": reduce_sim,
        "compare": compare_modes,
        "pipeline": pipeline_bench,
        "_child": _child,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
