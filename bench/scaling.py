"""Scaling-law mechanics on CPU: real shards from data/sample → tiny sweep → fit → held-out check.

    python bench/scaling.py [--out /tmp/sluice-scaling] [--max-bytes 1500000] [--results bench/RESULTS.md]

Builds token shards from the embedded sample with the real tokenizer and shard writer (the
same helper as the train/ tests: rst + prose + fortune documents, a 512-piece BPE, rows of 64
tokens), runs ``configs/sweep/tiny.yaml`` in this process, fits L(N, D) on the ``fit`` points
(approach 3) with approach 2 and L*(C) beside it, the compute-optimal tokens per parameter at the
held-out run's compute, predicts the held-out run from the points with ≤ 1/4 of its compute and,
with ``--results``, writes its own section of bench/RESULTS.md. Nothing here is estimated: every number printed is
measured in this run. The GPU sweep is not part of this script.
"""

from __future__ import annotations

import os
import sys

# bench/ holds tokenize.py: keep it from shadowing the stdlib module (pyarrow imports inspect)
_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _BENCH]
sys.path.insert(0, os.path.dirname(_BENCH))
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(_BENCH).parent

from curate.shards.format import load_manifest  # noqa: E402
from tests.train_fixtures import build_shards  # noqa: E402
from train.scaling import describe_fit_dict  # noqa: E402
from train.sweep import SweepConfig, run_sweep, sweep_markdown  # noqa: E402
from train.sweep_cli import holdout_line, summarize  # noqa: E402

SECTION = "## scaling-law sweep (CPU mechanics)"


def machine() -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "cpu": model,
        "python": platform.python_version(),
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def section(info: dict) -> str:
    summary = info["summary"]
    h, f = summary["holdout"], summary["fit"]
    goal = ""
    if h.get("predicted") is not None:
        met = h["rel_error"] <= 0.02 and h["inside_interval"]
        goal = (
            f" Goal (within 2% and inside the interval): **{'met' if met else 'not met'}**"
            f" ({100 * h['rel_error']:.2f}%, {'inside' if h['inside_interval'] else 'outside'})."
        )
    widths = {k: f["intervals"][k][1] - f["intervals"][k][0] for k in ("alpha", "beta")}
    lines = [
        SECTION,
        "",
        f"Command: `{info['command']}` (sweep `configs/sweep/tiny.yaml`, WSD: one run per model,"
        " smaller budgets as decay branches; held-out run trained separately; lr / warm-up / β2"
        " per size).",
        f"Machine: {info['machine']['nproc']} cores, {info['machine']['cpu']}, shared with other"
        f" engineers' jobs; load average before {info['load_before']}, after"
        f" {info['load_after']}. Shards: {info['shards']['train_tokens']:,} train /"
        f" {info['shards']['val_tokens']:,} val tokens (data/sample rst+prose+fortune,"
        f" {info['max_bytes']:,} bytes of text, BPE vocab {info['shards']['vocab']},"
        f" seq_len {info['shards']['seq_len']}). Training: {info['runs']} trainer runs"
        f" (+ decay branches), {info['train_s']:.0f} s summed over their final.json wall times"
        f" (this invocation's sweep step: {info['sweep_s']:.1f} s; finished runs are reused);"
        f" fits + {f['n_bootstrap']} bootstrap refits each + held-out check"
        f" {info['fit_s']:.1f} s.",
        "",
        sweep_markdown(info["table"]),
        f"Approach 3 on the {f['n_points']} `fit` points (N = {summary['param_count']}"
        f" parameters; Huber δ=1e-3 on log-loss, bounded L-BFGS-B): **{describe_fit_dict(f)}**"
        f" (90% bootstrap intervals; widths α {widths['alpha']:.3f}, β {widths['beta']:.3f};"
        f" Hessian condition {f['diagnostics'].get('condition', float('nan')):.3g}; residual RMS"
        f" {f['residual_rms_log']:.4f} in log-loss).",
        "",
        *summary["summary_lines"],
        "",
        holdout_line(h) + "." + goal,
        "",
        "Reference laws were fitted on MassiveText with a 32k tokenizer: their exponents and"
        " tokens per parameter compare, their losses do not. At this scale (10⁴–10⁶ parameters,"
        " ≤ 2.6·10⁶ tokens, a 512-piece vocabulary) the fit describes our corpus at toy scale, not"
        " a frontier to extrapolate far.",
        "",
    ]
    return "\n".join(lines) + "\n"


def write_section(results: Path, text: str) -> None:
    old = results.read_text() if results.exists() else "# Benchmark results\n"
    if SECTION in old:
        head, _, rest = old.partition(SECTION)
        nxt = rest.find("\n## ")
        old = head.rstrip("\n") + "\n" + (rest[nxt:] if nxt >= 0 else "")
    results.write_text(old.rstrip("\n") + "\n\n" + text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/sluice-scaling")
    p.add_argument("--config", default=str(ROOT / "configs" / "sweep" / "tiny.yaml"))
    p.add_argument("--max-bytes", type=int, default=2_500_000)
    p.add_argument("--vocab", type=int, default=512, help="BPE vocabulary of the shards")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per row of the shards")
    p.add_argument("--bootstrap", type=int, default=None)
    p.add_argument("--results", default=None, help="write the section into this RESULTS.md")
    args = p.parse_args(argv)
    out = Path(args.out)
    info: dict = {
        "command": "python bench/scaling.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "load_before": load(),
        "max_bytes": args.max_bytes,
    }
    shards = out / "shards"
    t = time.perf_counter()
    if not (shards / "manifest.json").exists():
        build_shards(shards, seq_len=args.seq_len, vocab=args.vocab, max_bytes=args.max_bytes)
    info["shard_s"] = time.perf_counter() - t
    m = load_manifest(shards)
    info["shards"] = {
        "train_tokens": m.splits["train"].tokens,
        "val_tokens": m.splits["val"].tokens,
        "vocab": m.tokenizer.vocab_size,
        "seq_len": m.seq_len,
    }
    cfg = SweepConfig.from_yaml(args.config)
    t = time.perf_counter()
    table = run_sweep(cfg, shards, out / "sweep")
    info["sweep_s"] = time.perf_counter() - t
    finals = [json.loads(p.read_text()) for p in (out / "sweep" / "runs").rglob("final.json")]
    info["runs"], info["train_s"] = len(finals), sum(f["wall_time_s"] for f in finals)
    t = time.perf_counter()
    holdout_rows = [r for r in table.to_pylist() if r["role"] == "holdout"]
    info["summary"] = summarize(
        table, out / "sweep", n_bootstrap=args.bootstrap or cfg.fit_bootstrap,
        reference_flops=max((r["flops"] for r in holdout_rows), default=None),
    )  # fmt: skip
    info["fit_s"] = time.perf_counter() - t
    info["load_after"] = load()
    info["table"] = table
    text = section(info)
    print(text)
    (out / "bench.json").write_text(
        json.dumps({k: v for k, v in info.items() if k != "table"}, indent=2, default=str) + "\n"
    )
    if args.results:
        write_section(Path(args.results), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
