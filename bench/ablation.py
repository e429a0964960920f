"""A data ablation on CPU: does a filter make a (tiny) model better at this scale?

On the Debian corpus (``python -m bench.corpus --tier small --out DIR``; a subset of its
folders, ``--kinds``), ``sluice ablate`` in-process with ``configs/ablation/debian.yaml``: the
default job's filters (baseline), (a) no filters, (b) near-dedup off, (c) the quality threshold
at 0.9998 instead of 0.5; the same tiny model, token budget and 5 seeds on each, evaluated on one
held-out slice of the documents. Each difference from the baseline comes with its paired
t-interval over the seeds and whether it is distinguishable from seed noise.

Then, from the measured seed-to-seed sd of the paired differences, the seeds (and compute) a
comparison needs to resolve a 0.5 % loss difference: the smallest n with
t_{0.975, n−1} · sd_d / √n ≤ 0.005 · L (``train.ablation.seeds_to_resolve``), times
2 variants × 6·N·D FLOPs per run; and what that is on a GPU at the measured GPT-2-124M rate.

    nice -n 10 .venv/bin/python -m bench.ablation --corpus /tmp/corpus-small [--json out.json]

CPU time is the whole process tree's (this process and its children, all threads); the load
average is printed at the start and the end (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "ablation" / "debian.yaml"
# (kind folder, format, domain) of the corpus layout (bench/corpus.py), the default job's domains
KINDS = {
    "html": ("html", "web"),
    "rst": ("text", "rst"),
    "code": ("code", "code"),
    "fortune": ("fortune", "fortune"),
    "prose": ("auto", "prose"),
    "pdf": ("pdf", "pdf"),
}
GPU_TOKENS_PER_S = 457_000  # GPT-2-124M, torch.compile + SDPA flash, one H100 (ARCHITECTURE.md)
GPU_CONFIG = ROOT / "configs" / "ablation" / "gpu.yaml"


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def corpus_inputs(corpus: Path, kinds: list[str], packages: list[str] | None) -> list[str]:
    """``--set inputs=...``: one input per (kind, package) folder of the corpus."""
    specs = []
    for kind in kinds:
        fmt, domain = KINDS[kind]
        for folder in sorted((corpus / kind).iterdir()):
            if packages and folder.name not in packages:
                continue
            specs.append(f"{{path: {folder}, format: {fmt}, domain: {domain}}}")
    if not specs:
        raise SystemExit(f"no input folders under {corpus} for {kinds} {packages or ''}")
    return [f"inputs=[{', '.join(specs)}]"]


def resolve_05(report: dict, rel: float = 0.005) -> dict:
    """Seeds and compute for a paired comparison to resolve ``rel`` of the baseline loss: at
    this scale (the measured sd), and for ``configs/ablation/gpu.yaml`` if its seed noise
    relative to the loss were the same (an assumption: noise shrinks with scale; a 3-seed pilot
    of the GPU config measures it)."""
    from curate.ablation import load_ablation
    from train.ablation import seeds_to_resolve

    gpu = load_ablation(GPU_CONFIG)
    gpu_run_h = gpu.tokens / GPU_TOKENS_PER_S / 3600
    base = report["variants"][report["baseline"]]["loss"]["mean"]
    t = report["training"]
    out = {}
    for name, v in report["variants"].items():
        d = v.get("vs_baseline", {}).get("loss")
        if d is None or d["sd"] is None:
            continue
        n = seeds_to_resolve(d["sd"], base, rel, report["confidence"])
        out[name] = {
            "sd_diff": d["sd"],
            "sd_rel": d["sd"] / base,
            "half_width_now": d["half_width"],
            "target_half_width": rel * base,
            "seeds_needed": n,
            "flops_here": None if n is None else 2 * n * t["flops_per_run"],
            "gpu_run_hours": gpu_run_h,
            "gpu_hours_same_rel_noise": None if n is None else 2 * n * gpu_run_h,
        }
    return out


def print_resolve(resolve: dict) -> None:
    print("To resolve a 0.5% loss difference (paired t, 95%): n = min{n: t(.975, n-1)·sd_d/√n "
          "≤ 0.005·L}; compute = 2 variants × n × one run")  # fmt: skip
    for name, r in resolve.items():
        n = r["seeds_needed"]
        if n is None:
            print(f"  {name}: not reachable")
            continue
        print(
            f"  {name}: sd_d {r['sd_diff']:.4f} nats ({100 * r['sd_rel']:.2f}% of L); half-width "
            f"now {r['half_width_now']:.4f}, needed {r['target_half_width']:.4f}: n = {n} seeds "
            f"per variant = {r['flops_here']:.3g} FLOPs at this scale; configs/ablation/gpu.yaml "
            f"({r['gpu_run_hours']:.2f} H100-h a run) at the same relative noise: "
            f"{r['gpu_hours_same_rel_noise']:,.0f} H100-hours"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, help="bench.corpus output (small)")
    ap.add_argument("--kinds", default="html,rst,code,fortune,prose",
                    help="corpus folders to read (comma-separated)")  # fmt: skip
    ap.add_argument("--packages", default="", help="only these package folders (comma-sep.)")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--run-dir", default="/tmp/sluice-bench-ablation")
    ap.add_argument("--tokens", type=int, help="token budget per run (default: the config's)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--resolve-from", type=Path, help="only print the 0.5%% section of a --json")
    args = ap.parse_args()
    if args.resolve_from:
        print_resolve(resolve_05(json.loads(args.resolve_from.read_text())))
        return
    if args.corpus is None:
        ap.error("--corpus is required (python -m bench.corpus --tier small --out DIR)")

    from curate.ablation import load_ablation
    from flows.ablate import run_local

    load0, t0, c0 = os.getloadavg(), time.time(), cpu_seconds()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    packages = [p for p in args.packages.split(",") if p]
    abl = load_ablation(args.config, [f"run_dir={args.run_dir}"])
    abl.set = [*corpus_inputs(args.corpus, args.kinds.split(","), packages), *abl.set]
    if args.tokens:
        abl.tokens = args.tokens
    report = run_local(abl)
    wall, cpu, load1 = time.time() - t0, cpu_seconds() - c0, os.getloadavg()
    print(report["markdown"])
    resolve = resolve_05(report)
    print_resolve(resolve)
    print(f"wall {wall:.0f} s, CPU {cpu:.0f} s (process tree); curation/training seconds: "
          + ", ".join(f"{k} {v:.0f}" for k, v in report["timings_s"].items()))  # fmt: skip
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.json:
        out = {k: v for k, v in report.items() if k != "markdown"}
        out.update(
            resolve_05=resolve,
            wall_s=wall,
            cpu_s=cpu,
            load_start=load0,
            load_end=load1,
            machine=f"{platform.node()} {os.cpu_count()} CPUs",
            inputs=abl.set[0],
        )
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    assert math.isfinite(report["variants"][report["baseline"]]["loss"]["mean"])


if __name__ == "__main__":
    main()
