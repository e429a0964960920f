"""``sluice sweep --config configs/sweep/tiny.yaml --shards DIR --out DIR``.

Trains the sweep (in this process; finished runs are skipped), fits L(N, D) on its ``fit`` runs
(``fit.json``, the law the ``pretrain`` flow predicts with), checks the prediction of the
held-out run from the runs with ≤ 1/4 of its compute, and writes ``sweep.md``,
``sweep.png``, ``holdout.json`` and ``sweep_summary.json`` in the output directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from train.report import fit_table, holdout_check, plot_sweep
from train.scaling import save_fit
from train.sweep import SweepConfig, collect_sweep, run_sweep, sweep_markdown


def summarize(
    table: pa.Table, out: Path, *, n_bootstrap: int, factor: float = 4.0
) -> dict[str, Any]:
    """Fit, held-out check, files; returns the summary written to sweep_summary.json."""
    fit_rows = table.filter(pc.equal(table["role"], "fit"))
    from curate.progress import heartbeat

    with heartbeat(f"sweep fit ({n_bootstrap} bootstrap refits)"):
        fit = fit_table(fit_rows, n_bootstrap=n_bootstrap)
    save_fit(fit, out / "fit.json")
    try:
        with heartbeat("sweep held-out check"):
            holdout = holdout_check(table, factor=factor, n_bootstrap=n_bootstrap)
    except ValueError as e:
        holdout = {"skipped": str(e)}
    (out / "holdout.json").write_text(json.dumps(holdout, indent=2) + "\n")
    plot_sweep(table, fit, out / "sweep.png", None if "skipped" in holdout else holdout)
    budget = 4 * max(table["flops"].to_pylist())
    n_opt, d_opt = fit.law.compute_optimal(budget)
    optimal = {"flops": budget, "n_params": float(n_opt), "tokens": float(d_opt)}
    summary = {
        "fit": fit.as_dict(),
        "holdout": holdout,
        "points": table.num_rows,
        "compute_optimal": optimal,
    }
    (out / "sweep_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    law = fit.law
    lines = [
        "# Scaling sweep\n",
        sweep_markdown(table),
        f"\nFit on {fit.n_points} `fit` points (Huber δ=1e-3 on log-loss, L-BFGS, "
        f"{len(fit.bootstrap)} bootstrap refits): L = {law.E:.3f} + {law.A:.4g}/N^{law.alpha:.3f}"
        f" + {law.B:.4g}/D^{law.beta:.3f}\n",
    ]
    for k, (lo, hi) in fit.param_intervals().items():
        lines.append(f"- {k}: 90% CI [{lo:.4g}, {hi:.4g}]")
    for warning in fit.warnings():
        lines.append(f"- **warning**: {warning}")
    lines.append(
        f"\nCompute-optimal split of C = {budget:.3g} FLOPs (4× the largest run) under this fit"
        f" (C = 6ND): N* = {n_opt:,.0f}, D* = {d_opt:,.0f} ({d_opt / n_opt:.1f} tokens/parameter)"
    )
    if "skipped" in holdout:
        lines.append(f"\nHeld-out check skipped: {holdout['skipped']}")
    else:
        lines.append(
            f"\nHeld-out: {holdout['target']['run']} (C = {holdout['target']['flops']:.3g}, "
            f"{holdout['compute_ratio']:.1f}× the largest fitted run) predicted "
            f"{holdout['predicted']:.4f} [{holdout['lo']:.4f}, {holdout['hi']:.4f}], observed "
            f"{holdout['observed']:.4f}: |pred − obs|/obs = {100 * holdout['rel_error']:.2f}%"
        )
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluice sweep", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="sweep YAML (configs/sweep/*.yaml)")
    p.add_argument("--shards", required=True, help="token shard directory (with manifest.json)")
    p.add_argument("--out", required=True, help="sweep output directory")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap refits (default: config)")
    p.add_argument("--no-train", action="store_true", help="only collect and fit finished runs")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sweep":  # flows/cli.py may forward its argv with the subcommand
        argv = argv[1:]
    args = p.parse_args(argv)
    from curate.config import ConfigError
    from train.cli import shards_problem

    try:
        cfg = SweepConfig.from_yaml(args.config)
    except ConfigError as e:
        p.exit(2, f"sluice sweep: error: {e}\n")
    problem = None if args.no_train else shards_problem(args.shards)
    if problem:
        p.exit(2, f"sluice sweep: error: {problem}\n")
    out = Path(args.out)
    table = collect_sweep(out) if args.no_train else run_sweep(cfg, args.shards, out)
    if table.num_rows == 0:
        print(f"no finished runs under {out}/runs", file=sys.stderr)
        return 1
    try:
        summarize(table, out, n_bootstrap=args.bootstrap or cfg.fit_bootstrap)
    except ValueError as e:  # too few finished points to fit five parameters
        print(f"cannot fit the sweep in {out}: {e}", file=sys.stderr)
        return 1
    print((out / "sweep.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
