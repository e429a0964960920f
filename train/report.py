"""Loss predictions from a fitted scaling law, and observed-vs-predicted reports.

Before a run: ``predict_run(fit, N, D)`` gives the final val loss with a bootstrap prediction
interval and the curve ``L(N, d)`` for ``d ≤ D``. That curve is what a run of the same N
*fully annealed at d tokens* would reach: a cosine/WSD run's loss mid-run sits above it until
its LR decays, and meets it at the end. ``write_prediction`` stores it as ``prediction.json``.

After a run: ``write_report`` reads ``metrics.jsonl`` / ``final.json`` and writes
``report.json``, ``report.md`` (a table) and ``report.png`` (loss vs tokens, observed and
predicted). ``holdout_check`` fits the sweep's smaller runs only and predicts a run at least
``factor`` × larger in compute: the honest test of the law.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from train.scaling import (
    NOT_IDENTIFIED,
    Fit,
    FitWeights,
    ScalingLaw,
    fit_scaling_law,
    load_fit,
    replicate_noise,
    training_flops,
)

PREDICTION_NAME = "prediction.json"

if TYPE_CHECKING:
    from curate.html_report import Section


class CurvePoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: int
    loss: float
    lo: float
    hi: float


class Prediction(BaseModel):
    """A run's predicted final val loss (nats/token) with a ``level`` prediction interval."""

    model_config = ConfigDict(extra="forbid")
    n_params: int  # N as the law counts it (``param_count``)
    tokens: int
    flops: float  # 6 N D
    loss: float | None  # None: the law is not identified, no prediction (``reason``)
    lo: float | None
    hi: float | None
    level: float
    identified: bool = True
    reason: str = ""
    param_count: str = "non_embedding"
    law: dict[str, Any]
    fitted_points: int
    n_bootstrap: int
    curve: list[CurvePoint]


def as_fit(law: Fit | ScalingLaw | str | Path) -> Fit:
    """A Fit from a Fit, a bare law (no interval) or a JSON file written by ``save_fit``."""
    if isinstance(law, Fit):
        return law
    if isinstance(law, ScalingLaw):
        return Fit(law=law, objective=math.nan, n_points=0)
    return load_fit(law)


def predict_run(
    law: Fit | ScalingLaw | str | Path,
    n_params: int | Mapping[str, int],
    tokens: int,
    *,
    level: float = 0.9,
    curve_points: int = 24,
    min_tokens: int | None = None,
) -> Prediction:
    """The run's final val loss under the law. ``n_params``: N as the fit counts it, or both
    counts (``{"total": ..., "non_embedding": ...}``) to pick the fit's. A law that the sweep
    does not identify gives no number: ``identified`` False, ``reason``, loss None."""
    fit = as_fit(law)
    if isinstance(n_params, Mapping):
        n_params = int(n_params[fit.param_count])
    if not fit.identified:
        return Prediction(
            n_params=int(n_params), tokens=int(tokens), flops=training_flops(n_params, tokens),
            loss=None, lo=None, hi=None, level=level, law=fit.law.as_dict(),
            fitted_points=fit.n_points, n_bootstrap=int(len(fit.bootstrap)), curve=[],
            identified=False, reason="; ".join(fit.reasons), param_count=fit.param_count,
        )  # fmt: skip
    point, lo, hi = fit.predict(n_params, tokens, level)
    start = min_tokens or max(1, tokens // 64)
    ds = np.unique(np.geomspace(start, tokens, curve_points).astype(np.int64))
    cp, clo, chi = fit.predict(n_params, ds, level)
    return Prediction(
        n_params=int(n_params),
        tokens=int(tokens),
        flops=training_flops(n_params, tokens),
        loss=float(point),
        lo=float(lo),
        hi=float(hi),
        level=level,
        law=fit.law.as_dict(),
        fitted_points=fit.n_points,
        n_bootstrap=int(len(fit.bootstrap)),
        param_count=fit.param_count,
        curve=[
            CurvePoint(tokens=int(d), loss=float(p), lo=float(a), hi=float(b))
            for d, p, a, b in zip(
                ds, np.atleast_1d(cp), np.atleast_1d(clo), np.atleast_1d(chi), strict=True
            )
        ],
    )


def write_prediction(prediction: Prediction, out_dir: str | Path) -> Path:
    path = Path(out_dir) / PREDICTION_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(prediction.model_dump(mode="json"), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_prediction(out_dir: str | Path) -> Prediction:
    return Prediction.model_validate_json((Path(out_dir) / PREDICTION_NAME).read_text())


def metrics_rows(data: bytes | str) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` text (the one parser of the trainer's metrics; a torn
    line from a live run is skipped)."""
    rows = []
    for line in data.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``<run_dir>/metrics.jsonl`` ([] when there is none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    return metrics_rows(path.read_bytes()) if path.exists() else []


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def compare(prediction: Prediction, run_dir: str | Path) -> dict[str, Any]:
    """Observed final val loss (``final.json``) and val curve vs the prediction."""
    run_dir = Path(run_dir)
    final = json.loads((run_dir / "final.json").read_text())
    observed = float(final["final_val_loss"])
    curve = [
        {"tokens": int(r["tokens"]), "val_loss": float(r["val_loss"])}
        for r in read_metrics(run_dir)
        if _finite(r.get("val_loss"))
    ]
    ok = prediction.identified and prediction.loss is not None
    n_key = "params" if prediction.param_count == "total" else "non_embedding_params"
    return {
        "identified": ok,
        "prediction": (
            "identified" if ok else f"{NOT_IDENTIFIED} ({prediction.reason or 'no law'})"
        ),
        "predicted": prediction.loss,
        "lo": prediction.lo,
        "hi": prediction.hi,
        "level": prediction.level,
        "observed": observed,
        "abs_error": abs(prediction.loss - observed) if ok else None,
        "rel_error": abs(prediction.loss - observed) / observed if ok else None,
        "inside_interval": bool(prediction.lo <= observed <= prediction.hi) if ok else None,
        "param_count": prediction.param_count,
        "n_params": prediction.n_params,
        "n_params_observed": int(final.get(n_key, prediction.n_params)),
        "tokens": prediction.tokens,
        "tokens_observed": int(final.get("tokens", prediction.tokens)),
        "wall_time_s": final.get("wall_time_s"),
        "val_curve": curve,
    }


def report_markdown(result: dict[str, Any]) -> str:
    pct = int(round(100 * result["level"]))
    if not result.get("identified", True):
        return (
            f"| N ({result.get('param_count', 'non_embedding')}) | D tokens | predicted val loss"
            " | observed |\n|---:|---:|---|---:|\n"
            f"| {result['n_params_observed']:,} | {result['tokens_observed']:,} | "
            f"{result['prediction']} | {result['observed']:.4f} |\n"
        )
    return (
        f"| N ({result.get('param_count', 'non_embedding')}) | D tokens | predicted val loss | "
        f"{pct}% interval | observed | abs err | rel err | inside |\n"
        "|---:|---:|---:|---|---:|---:|---:|:---:|\n"
        f"| {result['n_params_observed']:,} | {result['tokens_observed']:,} | "
        f"{result['predicted']:.4f} | [{result['lo']:.4f}, {result['hi']:.4f}] | "
        f"{result['observed']:.4f} | {result['abs_error']:.4f} | "
        f"{100 * result['rel_error']:.2f}% | {'yes' if result['inside_interval'] else 'no'} |\n"
    )


def plot_run(
    prediction: Prediction,
    result: dict[str, Any],
    path: str | Path,
    references: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The loss-vs-prediction figure: the law's curve with its interval, the observed val
    curve and the final loss; with ``references`` (name → ``{"law": ScalingLaw fields}``), the
    published laws at the same N on a right axis of their own (other data, other tokenizer)."""
    import numpy as np

    from curate.plots import pyplot
    from train.scaling import ScalingLaw

    plt = pyplot()
    curve = result["val_curve"]
    pts = prediction.curve
    if references:  # zoom on the tokens the run saw
        x_min = curve[0]["tokens"] / 2 if curve else prediction.tokens / 8
        pts = [p for p in prediction.curve if p.tokens >= x_min] or prediction.curve
    d = np.array([p.tokens for p in pts])
    fig, ax = plt.subplots(figsize=(7.2, 4.4) if references else (6.4, 4.2))
    ax.plot(d, [p.loss for p in pts], "C0-", label="law L(N, d) (annealed at d)")
    ax.fill_between(d, [p.lo for p in pts], [p.hi for p in pts], color="C0", alpha=0.2,
                    label=f"{int(100 * prediction.level)}% interval")  # fmt: skip
    if curve:
        ax.plot([r["tokens"] for r in curve], [r["val_loss"] for r in curve], "C1o-", ms=3,
                label="observed val loss")  # fmt: skip
    ax.plot([result["tokens_observed"]], [result["observed"]], "C3*", ms=12, label="final")
    ax.set_xscale("log")
    ax.set_xlabel("tokens D")
    ax.set_ylabel("val loss (nats/token)")
    handles, labels = ax.get_legend_handles_labels()
    if references:
        ref_ax = ax.twinx()
        for i, (name, ref) in enumerate(references.items()):
            law = ScalingLaw(**ref["law"])
            ref_ax.plot(d, law.loss(prediction.n_params, d), f"C{i + 4}--", lw=1,
                        label=f"{name} (right axis; other data/tokenizer)")  # fmt: skip
        ref_ax.set_ylabel("published laws at this N (their own scale)", fontsize=8)
        ref_handles, ref_labels = ref_ax.get_legend_handles_labels()
        handles, labels = handles + ref_handles, labels + ref_labels
    ax.legend(handles, labels, fontsize=7 if references else 8)
    ax.set_title(
        f"N = {prediction.n_params:,} ({prediction.param_count} params): "
        + ("observed vs predicted" if prediction.identified else NOT_IDENTIFIED),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(run_dir: str | Path, prediction: Prediction | None = None) -> dict[str, Path]:
    """report.json, report.md and report.png in the run dir (prediction.json unless given)."""
    run_dir = Path(run_dir)
    prediction = prediction or read_prediction(run_dir)
    result = compare(prediction, run_dir)
    paths = {
        "json": run_dir / "report.json",
        "markdown": run_dir / "report.md",
        "png": run_dir / "report.png",
    }
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["markdown"].write_text("# Val loss: observed vs predicted\n\n" + report_markdown(result))
    plot_run(prediction, result, paths["png"])
    return paths


def training_section(train_dir: str | Path) -> Section | None:
    """The HTML report's section of a training run (or a folder of runs, a sweep): loss curves
    from ``metrics.jsonl`` next to the scaling-law prediction, if any exist (None otherwise);
    the flows pass it to ``curate.html_report``.

    Reads what train/ writes: ``metrics.jsonl`` rows (``step``, ``tokens``, ``train_loss``,
    ``val_loss``, ...), ``prediction.json`` (``loss``, ``lo``, ``hi``, ``tokens`` and a
    ``curve`` of ``{tokens, loss, lo, hi}``) and ``final.json`` (``final_val_loss``).
    """
    from curate.html_report import Section
    from curate.plots import png_bytes, pyplot

    base = Path(train_dir)
    if not base.is_dir():
        return None
    metrics_files = sorted(base.rglob("metrics.jsonl"))
    preds = sorted(base.rglob("*prediction*.json"))
    finals = sorted(base.rglob("final.json"))
    if not metrics_files and not preds:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    rows: list[list[Any]] = []
    plotted = False
    xkey = "tokens"
    for mf in metrics_files:
        recs = read_metrics(mf.parent)
        xkey = next((k for k in ("tokens", "step") if any(k in r for r in recs)), xkey)
        for ykey in sorted({k for r in recs for k in r if "loss" in k}):
            pts = [
                (r[xkey], r[ykey]) for r in recs if _finite(r.get(xkey)) and _finite(r.get(ykey))
            ]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            label = f"{mf.parent.name}/{ykey}" if len(metrics_files) > 1 else ykey
            ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
            plotted = True
            rows.append([label, "last measured", xs[-1], round(float(ys[-1]), 4)])
    for ff in finals:
        try:
            final = json.loads(ff.read_text())
        except ValueError:
            continue
        if isinstance(final, dict) and _finite(final.get("final_val_loss")):
            rows.append(
                [
                    ff.parent.name,
                    "final val loss",
                    final.get("tokens", ""),
                    round(float(final["final_val_loss"]), 4),
                ]
            )
    for pf in preds:
        try:
            pred = json.loads(pf.read_text())
        except ValueError:
            continue
        if not isinstance(pred, dict):
            continue
        if pred.get("identified") is False:
            rows.append([pf.stem, f"{NOT_IDENTIFIED} ({pred.get('reason') or 'no law'})", "", ""])
        curve = [
            c
            for c in pred.get("curve") or []
            if isinstance(c, dict) and _finite(c.get("tokens")) and _finite(c.get("loss"))
        ]
        if curve:
            xs = [c["tokens"] for c in curve]
            ax.plot(xs, [c["loss"] for c in curve], "--", color="gray", label="predicted")
            if all(_finite(c.get("lo")) and _finite(c.get("hi")) for c in curve):
                ax.fill_between(
                    xs, [c["lo"] for c in curve], [c["hi"] for c in curve], color="gray", alpha=0.2
                )
            plotted = True
        if _finite(pred.get("loss")):
            x = pred.get("tokens") if _finite(pred.get("tokens")) else None
            interval = (
                f" [{pred['lo']:.4g}, {pred['hi']:.4g}]"
                if _finite(pred.get("lo")) and _finite(pred.get("hi"))
                else ""
            )
            rows.append(
                [pf.stem, f"predicted final loss{interval}", x or "", round(float(pred["loss"]), 4)]
            )
            if x is not None:
                ax.plot([x], [pred["loss"]], "o", color="black")
            else:
                ax.axhline(float(pred["loss"]), linestyle="--", color="gray")
            plotted = True
        for k, v in sorted(pred.items()):
            if k != "loss" and "loss" in k and _finite(v):
                ax.axhline(float(v), linestyle=":", color="gray")
                rows.append([pf.stem, k, "", round(float(v), 4)])
                plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xlabel(xkey)
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Loss vs prediction")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return Section(
        key="loss-vs-prediction",
        title="Loss vs prediction",
        summary=f"{len(metrics_files)} metrics file(s), {len(preds)} prediction file(s) in {base}.",
        header=["series", "what", xkey, "loss"],
        rows=rows,
        png=png_bytes(fig),
    )


# ---------------------------------------------------------------- sweep-level checks
def fit_table(
    table: pa.Table,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    weights: FitWeights = "none",
    **kw: Any,
) -> Fit:
    """Fit L(N, D) to the rows of a sweep table (``train.sweep.collect_sweep``; pass its
    ``param_count`` through ``kw``). ``weights="replicate_noise"``: residuals in units of
    σ(D), the noise model the table's replicated rows give (unweighted when they are too few:
    ``train.scaling.replicate_noise``; ``fit_scaling_law``'s ``huber_c``)."""
    n, d, loss = (table[c].to_numpy() for c in ("n_params", "tokens", "val_loss"))
    noise = replicate_noise(n, d, loss) if weights == "replicate_noise" else None
    return fit_scaling_law(n, d, loss, n_bootstrap=n_bootstrap, seed=seed, noise=noise, **kw)


def holdout_check(
    table: pa.Table,
    *,
    factor: float = 4.0,
    n_bootstrap: int = 200,
    level: float = 0.9,
    param_count: str = "total",
    weights: FitWeights = "none",
) -> dict[str, Any]:
    """Fit on runs with C ≤ C_target / factor (``weights``: :func:`fit_table`'s); predict the
    target (the largest-C holdout row, else the largest-C row) and report |pred − obs| / obs —
    or, when those runs do not identify the law, NOT_IDENTIFIED with the reasons and no
    number."""
    rows = table.to_pylist()
    holdouts = [r for r in rows if r["role"] == "holdout"] or rows
    target = max(holdouts, key=lambda r: r["flops"])
    train_rows = [r for r in rows if r["role"] == "fit" and r["flops"] * factor <= target["flops"]]
    if len(train_rows) < 5:
        raise ValueError(
            f"only {len(train_rows)} runs have ≤ 1/{factor:g} of the target's compute "
            f"({target['flops']:.3g} FLOPs); need ≥ 5 to fit"
        )
    fit = fit_table(
        pa.Table.from_pylist(train_rows, schema=table.schema),
        n_bootstrap=n_bootstrap,
        param_count=param_count,
        weights=weights,
    )
    common = {
        "target": target,
        "fitted_runs": [r["run"] for r in train_rows],
        "compute_ratio": target["flops"] / max(r["flops"] for r in train_rows),
        "law": fit.law.as_dict(),
        "intervals": fit.param_intervals(level),
        "identified": fit.identified,
        "reasons": list(fit.reasons),
    }
    if not fit.identified:
        return common | {"predicted": None, "observed": target["val_loss"], "level": level}
    point, lo, hi = fit.predict(target["n_params"], target["tokens"], level)
    obs = target["val_loss"]
    return common | {
        "predicted": float(point),
        "lo": float(lo),
        "hi": float(hi),
        "level": level,
        "observed": obs,
        "rel_error": abs(float(point) - obs) / obs,
        "inside_interval": bool(lo <= obs <= hi),
    }


def plot_sweep(table: pa.Table, fit: Fit, path: str | Path, holdout: dict | None = None) -> Path:
    """Val loss vs D per model (points) with the fitted law's curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    rows = table.to_pylist()
    models = sorted({(r["n_params"], r["model"]) for r in rows})
    for i, (n, name) in enumerate(models):
        pts = sorted((r["tokens"], r["val_loss"], r["role"]) for r in rows if r["model"] == name)
        d = np.geomspace(min(p[0] for p in pts) / 1.5, max(p[0] for p in pts) * 1.5, 50)
        ax.plot(d, fit.law.loss(n, d), f"C{i}-", lw=1)
        for tokens, loss, role in pts:
            ax.plot(tokens, loss, f"C{i}" + ("*" if role == "holdout" else "o"),
                    ms=11 if role == "holdout" else 5)  # fmt: skip
        ax.plot([], [], f"C{i}o-", label=f"{name}: N={n:,}")
    if holdout and holdout.get("predicted") is not None:
        t = holdout["target"]
        ax.errorbar(
            t["tokens"], holdout["predicted"],
            yerr=[[holdout["predicted"] - holdout["lo"]], [holdout["hi"] - holdout["predicted"]]],
            fmt="kx", capsize=4, label="held-out prediction",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("tokens D")
    ax.set_ylabel("final val loss (nats/token)")
    ax.set_title(
        f"L = {fit.law.E:.2f} + {fit.law.A:.3g}/N^{fit.law.alpha:.2f} "
        f"+ {fit.law.B:.3g}/D^{fit.law.beta:.2f}"
        if fit.identified
        else f"{NOT_IDENTIFIED}: curves are the unidentified fit",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
