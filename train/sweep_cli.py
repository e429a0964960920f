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
from train.scaling import (
    DEFAULT_PARAM_COUNT,
    NOT_IDENTIFIED,
    FitWeights,
    analyse,
    save_fit,
    summary_lines,
)
from train.sweep import SweepConfig, collect_sweep, run_sweep, sweep_markdown


def summarize(
    table: pa.Table,
    out: Path,
    *,
    n_bootstrap: int,
    factor: float = 4.0,
    param_count: str | None = None,
    reference_flops: float | None = None,
    weights: FitWeights | None = None,
) -> dict[str, Any]:
    """Fit (approach 3, with its identification check), approaches 2 and L*(C) beside it,
    held-out check, files; returns the summary written to sweep_summary.json. Every number a
    fit does not identify is replaced by NOT_IDENTIFIED and the reason."""
    meta = out / "sweep.json"
    config = json.loads(meta.read_text()).get("config", {}) if meta.exists() else {}
    if param_count is None:
        param_count = config.get("param_count", DEFAULT_PARAM_COUNT)
    if weights is None:
        weights = config.get("fit_weights", "none")
    fit_rows = table.filter(pc.equal(table["role"], "fit"))
    from curate.progress import heartbeat

    with heartbeat(f"sweep fit ({n_bootstrap} bootstrap refits)"):
        fit = fit_table(fit_rows, n_bootstrap=n_bootstrap, param_count=param_count, weights=weights)
    save_fit(fit, out / "fit.json")
    try:
        with heartbeat("sweep held-out check"):
            holdout = holdout_check(
                table, factor=factor, n_bootstrap=n_bootstrap, param_count=param_count,
                weights=weights,
            )  # fmt: skip
    except ValueError as e:
        holdout = {"skipped": str(e)}
    (out / "holdout.json").write_text(json.dumps(holdout, indent=2) + "\n")
    plot_sweep(table, fit, out / "sweep.png", None if "skipped" in holdout else holdout)
    budget = reference_flops or factor * max(table["flops"].to_pylist())
    analysis = analyse(
        fit_rows["n_params"].to_numpy(), fit_rows["tokens"].to_numpy(),
        fit_rows["val_loss"].to_numpy(), fit=fit, reference_flops=budget,
        n_bootstrap=n_bootstrap,
    )  # fmt: skip
    lines = summary_lines(analysis)
    summary = {
        "fit": fit.as_dict(),
        "identified": fit.identified,
        "holdout": holdout,
        "points": table.num_rows,
        "param_count": param_count,
        "analysis": analysis,
        "compute_optimal": analysis["approach3"],
        "summary_lines": lines,
    }
    (out / "sweep_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = [
        "# Scaling sweep\n",
        sweep_markdown(table),
        f"\nFit on {fit.n_points} `fit` points (N = {param_count} parameters; Huber δ=1e-3 on"
        f" log-loss, bounded L-BFGS-B, {len(fit.bootstrap)} bootstrap refits; "
        f"{fit.weights_text()}): {fit.describe()}\n",
    ]
    if fit.identified:
        md += [
            f"- {k}: 90% CI [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in fit.param_intervals().items()
        ]
    md += ["", *lines, "", holdout_line(holdout)]
    (out / "sweep.md").write_text("\n".join(md) + "\n")
    return summary


def holdout_line(holdout: dict[str, Any]) -> str:
    """The held-out check in one line: the error, or why there is no prediction."""
    if "skipped" in holdout:
        return f"Held-out check skipped: {holdout['skipped']}"
    head = (
        f"Held-out: {holdout['target']['run']} (C = {holdout['target']['flops']:.3g}, "
        f"{holdout['compute_ratio']:.1f}× the largest of the {len(holdout['fitted_runs'])} runs"
        " fitted)"
    )
    if holdout.get("predicted") is None:
        return f"{head}: {NOT_IDENTIFIED} ({'; '.join(holdout.get('reasons', []))})"
    return (
        f"{head}: predicted {holdout['predicted']:.4f} [{holdout['lo']:.4f}, {holdout['hi']:.4f}]"
        f" (90%), observed {holdout['observed']:.4f}: |pred − obs|/obs ="
        f" {100 * holdout['rel_error']:.2f}%,"
        f" {'inside' if holdout['inside_interval'] else 'outside'} the interval"
    )


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
