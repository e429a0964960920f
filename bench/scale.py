"""Scale benchmarks of the sharded dedup reduce.

``reduce``: a reduce-only simulation. Synthetic near-dedup map outputs (the columns the reduce
reads: id, MinHash signature, n_shingles) are generated in chunks on disk, with planted
duplicate clusters: a copy shares between one and half of its root's LSH bands with it and has
random values elsewhere. Then every bucket task (``NEAR_DEDUP.bucket``) and the components step
(``NEAR_DEDUP.components``) runs in its own process, whose peak RSS (VmHWM) is measured; the
state must hold exactly the planted clusters, each copy naming its root. By default the map's
side of the key-range shuffle runs first (``NEAR_DEDUP.shuffle``: one process per part writes
its band keys sorted by key) and every bucket task reads only its range (``--no-shuffle``:
every bucket task reads and hashes every part's signatures, as before the shuffle).

    python -m bench.scale reduce --docs 1000000 --parts 20 --buckets 8

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
import html
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.dedup.minhash import NEAR_DEDUP, NearDedupConfig
from curate.plan import SHUFFLE_ROW_GROUP
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
    urls = sorted(str(p) for p in folder.glob("map-*[0-9].parquet"))
    t0, c0 = time.perf_counter(), time.process_time()
    info: dict = {}
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
        shuffles = []
        if args.shuffle:
            common += ["--shuffle"]
            for p in range(len(urls)):
                shuffles.append(_run_child(["--phase", "shuffle", "--bucket", str(p), *common]))
            print(json.dumps({"shuffle_tasks": len(shuffles), **shuffles[-1]}))
        keys_bytes = sum(p.stat().st_size for p in Path(tmp).glob("map-*.keys.parquet"))
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
        shuffle_s = sum(t["seconds"] for t in shuffles)
        summary = {
            "docs": args.docs,
            "buckets": args.buckets,
            "bands": args.bands,
            "rows": args.rows,
            "shuffle": args.shuffle,
            "max_shuffle_rss_mib": max((t["vm_hwm_mib"] for t in shuffles), default=None),
            "shuffle_seconds_total": round(shuffle_s, 1),
            "us_per_doc_shuffle": round(1e6 * shuffle_s / args.docs, 2),
            "keys_bytes_per_doc": round(keys_bytes / args.docs, 1),
            "bucket_seconds": [t["seconds"] for t in tasks],
            "bucket_rss_mib": [t["vm_hwm_mib"] for t in tasks],
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
    r.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        help="bucket tasks read every part's signatures (no key-range shuffle)",
    )
    q = sub.add_parser(
        "pipeline",
        help="--local vs Prefect + Ray on a >= 1 GB corpus (run on a quiet machine)",
    )
    q.add_argument("--corpus", required=True, help="python -m bench.corpus --tier full --out DIR")
    q.add_argument("--out", required=True, help="work folder (the grown corpus, the runs)")
    q.add_argument("--grow-to-mb", type=float, default=1100)
    q.add_argument("--bytes-per-part", type=int, default=32_000_000)
    q.add_argument("--cpus", type=int, default=2)
    q.add_argument("--parts-per-task", type=int, default=1)
    q.add_argument(
        "--api", default="http://127.0.0.1:4200/api", help="a Prefect API (`sluice server`)"
    )
    q.add_argument("--runs", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    c = sub.add_parser("_child")
    c.add_argument("--phase", choices=["shuffle", "bucket", "components"], required=True)
    c.add_argument("--shuffle", action="store_true")
    c.add_argument("--dir", required=True)
    c.add_argument("--bucket", type=int, default=0)
    c.add_argument("--buckets", type=int, default=1)
    c.add_argument("--bands", type=int, default=16)
    c.add_argument("--rows", type=int, default=2)
    args = parser.parse_args(argv)
    {"reduce": reduce_sim, "pipeline": pipeline_bench, "_child": _child}[args.cmd](args)


if __name__ == "__main__":
    main()
