"""Prefect flow ``end-to-end``: raw documents → shards → scaling sweep → fitted law → a training
run predicted before it starts → report (observed vs predicted, published laws as references).

    end_to_end(config_path, train_config="configs/train/tiny.yaml",
               sweep_config="configs/sweep/demo.yaml", nproc=1)

1. ``curate`` (subflow, tasks on Ray; ``local_curation``: in-process): the config's documents
   into ``<run>/shards`` (the tokenizer is trained inside).
2. ``sweep``: the sweep config's runs on those shards in ``<run>/sweep`` (finished runs are
   skipped), then ``fit-law``: L(N, D) = E + A/N^α + B/D^β → ``<run>/sweep/fit.json``
   (``train.sweep_cli.summarize``; kept when no new point was trained).
3. ``plan-main-run``: the training config with the sweep's ``set`` (same optimizer, eval set
   and WSD schedule as the points the law was fitted on) and enough steps for ≥
   ``compute_factor`` × the compute (6ND) of the largest sweep point.
4. ``pretrain`` (subflow, ``flows.pretrain``): ``prediction.json`` is written before the run
   trains in ``<run>/train``; a finished run (its ``final.json`` for the planned steps) is not
   trained again.
5. ``end-to-end-report``: ``<run>/report.{json,md,png}`` and a Prefect markdown artifact: the
   funnel's totals, the fitted law, observed vs predicted final val loss with the interval,
   and what Chinchilla's and Epoch AI's published laws say at the same (N, D) (fitted on other
   data with another tokenizer: their losses are not comparable in absolute value).

``run_local`` runs the same steps without Prefect or Ray (``sluice demo --local``).
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import MissingContextError

from flows import runtime  # noqa: F401 - telemetry off before prefect and ray load
from flows.runtime import as_task, flow_run_namer, in_prefect_run, in_process

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN = str(REPO_ROOT / "configs" / "train" / "tiny.yaml")
DEFAULT_SWEEP = str(REPO_ROOT / "configs" / "sweep" / "demo.yaml")
REPORT_NAME = "report"


def _log(message: str) -> None:
    """A Prefect log line inside a flow or task; a printed line outside (``run_local``)."""
    try:
        get_run_logger().info(message)
    except MissingContextError:
        print(message, flush=True)


def local_run_dir(cfg: Any) -> Path:
    """The run directory as a local path (training reads shards with memory maps)."""
    url = cfg.run_url
    if "://" in url and not url.startswith("file://"):
        raise ValueError(
            f"run directory {url}: sweep and training need a local run directory "
            "(set run_dir to a local or shared-disk path)"
        )
    return Path(url.removeprefix("file://")).resolve()


def curation_summary(cfg: Any, stats: dict[str, Any]) -> dict[str, Any]:
    """Documents in/kept, shard tokens: the funnel's totals from stats.json."""
    from curate.runner import stage_names

    names = stage_names(cfg)
    stages = stats["stages"]
    return {
        "docs_in": int(stages[names[0]]["docs_in"]),
        "docs_kept": int(stages[names[-1]]["kept"]),
        "removed": {n: int(stages[n]["removed_total"]) for n in names},
        "quarantined": {n: int(stages[n]["quarantined_total"]) for n in names},
        "shard_tokens": {k: int(v["tokens"]) for k, v in stats.get("shards", {}).items()},
    }


# ---------------------------------------------------------------- steps (plain functions)
def sweep_and_fit(
    sweep_config: str, shards_dir: Path, sweep_dir: Path, n_bootstrap: int | None = None
) -> dict[str, Any]:
    """Train the sweep (finished runs skipped), fit the law; the fit is reused when no point
    changed since it was written."""
    from train.sweep import SweepConfig, run_sweep
    from train.sweep_cli import summarize

    cfg = SweepConfig.from_yaml(sweep_config)
    table = run_sweep(cfg, shards_dir, sweep_dir, log=_log)
    if table.num_rows < 5:
        raise ValueError(
            f"{sweep_dir}: only {table.num_rows} finished sweep points; the law has 5 "
            "parameters (see error.json of the failed runs)"
        )
    summary_path = sweep_dir / "sweep_summary.json"
    fit_path = sweep_dir / "fit.json"
    newest_point = max(p.stat().st_mtime for p in sweep_dir.glob("runs/*/final.json"))
    if (
        fit_path.exists()
        and summary_path.exists()
        and json.loads(summary_path.read_text()).get("points") == table.num_rows
        and fit_path.stat().st_mtime >= newest_point
    ):
        _log(f"fit: {fit_path} is up to date ({table.num_rows} points)")
        summary = json.loads(summary_path.read_text())
    else:
        summary = summarize(table, sweep_dir, n_bootstrap=n_bootstrap or cfg.fit_bootstrap)
    from train.scaling import describe_fit_dict

    law = summary["fit"]["law"]
    describe = describe_fit_dict(summary["fit"])
    _log(f"fit on {table.num_rows} points: {describe}")
    for line in summary.get("summary_lines", []):
        _log(line)
    largest = max(table.to_pylist(), key=lambda r: r["flops"])
    return {
        "fit": str(fit_path),
        "points": table.num_rows,
        "law": law,
        "identified": bool(summary["fit"].get("identified", False)),
        "describe": describe,
        "summary_lines": summary.get("summary_lines", []),
        "param_count": summary["fit"].get("param_count", "non_embedding"),
        "largest": largest,
        "sweep_set": list(cfg.set),
        "summary": str(summary_path),
        "markdown": str(sweep_dir / "sweep.md"),
        "png": str(sweep_dir / "sweep.png"),
    }


def plan_main_run(
    train_config: str,
    sweep_set: list[str],
    train_overrides: list[str],
    shards_dir: Path,
    largest_flops: float,
    compute_factor: float,
    nproc: int,
    param_count: str = "total",
) -> dict[str, Any]:
    """Overrides for the main run: the sweep's ``set``, a WSD schedule without branches, and
    steps for ≥ ``compute_factor`` × the largest sweep point's 6ND (N counted as the sweep's
    law counts it, ``param_count``); then the caller's own."""
    from curate.shards.format import load_manifest
    from flows.pretrain import model_params
    from train.scaling import training_flops
    from train.trainer import TrainConfig

    manifest = load_manifest(shards_dir)
    seq_len = manifest.seq_len
    base = [*sweep_set, "schedule=wsd", "decay_at=[]"]
    cfg = TrainConfig.from_yaml(train_config, [*base, *train_overrides])
    vocab = cfg.model.vocab_size or manifest.tokenizer.vocab_size
    m = cfg.model.model_copy(update={"seq_len": seq_len, "vocab_size": vocab})
    by_count = {c: model_params(m, c) for c in ("total", "non_embedding")}
    n_params = by_count[param_count]
    per_step = cfg.micro_batch_size * cfg.grad_accum * nproc * seq_len
    needed = math.ceil(compute_factor * largest_flops / training_flops(n_params, per_step))
    explicit_steps = any(o.split("=", 1)[0].strip() == "steps" for o in train_overrides)
    steps = cfg.steps if explicit_steps else max(cfg.steps, needed)
    tokens = steps * per_step
    flops = training_flops(n_params, tokens)
    eval_every = max(1, steps // 8)  # a val curve for the report (the sweep evaluates at the end)
    overrides = [*base, f"eval_every={eval_every}", f"steps={steps}", *train_overrides]
    if explicit_steps:
        overrides = [*base, f"eval_every={eval_every}", *train_overrides]
    ratio = flops / largest_flops
    _log(
        f"main run: N = {n_params:,} ({param_count}), {steps} steps × {per_step:,} tokens = D {tokens:,}, "
        f"C = {flops:.3g} FLOPs = {ratio:.1f}× the largest sweep point"
    )
    return {
        "overrides": overrides,
        "n_params": int(n_params),
        "n_params_by_count": by_count,
        "param_count": param_count,
        "steps": steps,
        "tokens": tokens,
        "flops": flops,
        "compute_ratio": ratio,
    }


def finished(train_dir: Path, steps: int) -> bool:
    """The main run already trained to ``steps`` and has its prediction and report."""
    final = train_dir / "final.json"
    if not (final.exists() and (train_dir / "prediction.json").exists()):
        return False
    return int(json.loads(final.read_text()).get("steps", -1)) == steps


def write_end_to_end_report(
    run_dir: Path,
    curation: dict[str, Any],
    sweep: dict[str, Any],
    plan: dict[str, Any],
    timings: dict[str, float],
) -> dict[str, Any]:
    """``<run>/report.{json,md,png}``: observed vs predicted, with the reference laws."""
    from train.report import compare, plot_run, read_prediction, training_section
    from train.scaling import CHINCHILLA, EPOCH_AI

    train_dir = run_dir / "train"
    prediction = read_prediction(train_dir)
    result = compare(prediction, train_dir)
    n, d = result["n_params_observed"], result["tokens_observed"]
    references = {
        name: {"law": law.as_dict(), "predicted": float(law.loss(n, d))}
        for name, law in (("chinchilla", CHINCHILLA), ("epoch_ai", EPOCH_AI))
    }
    first_val = result["val_curve"][0]["val_loss"] if result["val_curve"] else math.nan
    report = {
        "run_dir": str(run_dir),
        "curation": curation,
        "sweep": {
            k: sweep.get(k)
            for k in (
                "fit",
                "points",
                "law",
                "largest",
                "identified",
                "describe",
                "summary_lines",
                "param_count",
            )
        },
        "identified": result.get("identified", True),
        "prediction": result.get("prediction", "identified"),
        "main_run": plan | {"first_val_loss": first_val},
        "predicted": result["predicted"],
        "lo": result["lo"],
        "hi": result["hi"],
        "level": result["level"],
        "observed": result["observed"],
        "rel_error": result["rel_error"],
        "inside_interval": result["inside_interval"],
        "prediction_written_before_training": prediction_before_training(train_dir),
        "references": references,
        "val_curve": result["val_curve"],
        "timings_s": timings,
    }
    paths = {
        "json": run_dir / f"{REPORT_NAME}.json",
        "markdown": run_dir / f"{REPORT_NAME}.md",
        "png": run_dir / f"{REPORT_NAME}.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(report_markdown(report))
    plot_run(prediction, result, paths["png"], references)
    from curate.html_report import write_report_html

    # the run's report.html again, now with the training run's loss vs prediction
    extra = [s for s in [training_section(train_dir)] if s is not None]
    paths["html"] = Path(write_report_html(str(run_dir), extra))
    return report | {"paths": {k: str(v) for k, v in paths.items()}}


def prediction_before_training(train_dir: Path) -> bool:
    """prediction.json was written before training started (final.json's time − wall time)."""
    pred, final = train_dir / "prediction.json", train_dir / "final.json"
    if not (pred.exists() and final.exists()):
        return False
    started = final.stat().st_mtime - float(json.loads(final.read_text())["wall_time_s"])
    return pred.stat().st_mtime <= started


def report_markdown(r: dict[str, Any]) -> str:
    c, law, m = r["curation"], r["sweep"]["law"], r["main_run"]
    pct = int(round(100 * r["level"]))
    tokens = ", ".join(f"{k} {v:,}" for k, v in c["shard_tokens"].items())
    lines = [
        "# End-to-end: documents → shards → sweep → law → training run\n",
        f"- Curation: {c['docs_in']:,} documents in, {c['docs_kept']:,} kept; shards: {tokens} "
        "tokens",
        f"- Sweep: {r['sweep']['points']} points → {r['sweep'].get('describe') or law}"
        f" (`{r['sweep']['fit']}`)",
        *(f"  {line}" for line in r["sweep"].get("summary_lines") or []),
        f"- Main run: N = {m['n_params']:,} ({m.get('param_count', 'non_embedding')})"
        f" parameters, D = {m['tokens']:,} "
        f"tokens, C = 6ND = {m['flops']:.3g} FLOPs ({m['compute_ratio']:.1f}× the largest "
        "sweep point); predicted before training: "
        f"{'yes' if r['prediction_written_before_training'] else 'no'}\n",
        f"| law | predicted final val loss | {pct}% interval | observed | \\|pred − obs\\|/obs |",
        "|---|---:|---|---:|---:|",
        f"| fitted on this sweep | {r['predicted']:.4f} | [{r['lo']:.4f}, {r['hi']:.4f}] | "
        f"{r['observed']:.4f} | {100 * r['rel_error']:.2f}% |"
        if r.get("identified", True)
        else f"| fitted on this sweep | {r['prediction']} | – | {r['observed']:.4f} | – |",
    ]
    for name, ref in r["references"].items():
        label = {"chinchilla": "Chinchilla (Hoffmann 2022)", "epoch_ai": "Epoch AI (2024)"}[name]
        lines.append(
            f"| {label}, reference: other data and tokenizer | {ref['predicted']:.4f} | – | "
            f"{r['observed']:.4f} | not comparable |"
        )
    lines += [
        "",
        "The published laws were fitted on MassiveText with a 32k SentencePiece vocabulary: "
        "their losses are in nats per token of another tokenizer on other text, so only their "
        "exponents (α, β) compare with the fitted law's; they are shown for scale.",
        "",
        "| step | seconds |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in r["timings_s"].items()),
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- Prefect flow
@task(name="sweep-and-fit", persist_result=False)
def sweep_task(sweep_config: str, shards_dir: str, sweep_dir: str, n_bootstrap: int | None):
    return sweep_and_fit(sweep_config, Path(shards_dir), Path(sweep_dir), n_bootstrap)


@task(name="plan-main-run", persist_result=False)
def plan_task(
    train_config: str,
    sweep_set: list[str],
    train_overrides: list[str],
    shards_dir: str,
    largest_flops: float,
    compute_factor: float,
    nproc: int,
    param_count: str = "total",
) -> dict[str, Any]:
    return plan_main_run(train_config, sweep_set, train_overrides, Path(shards_dir),
                         largest_flops, compute_factor, nproc, param_count)  # fmt: skip


@task(name="end-to-end-report", persist_result=False)
def report_task(
    run_dir: str, curation: dict, sweep: dict, plan: dict, timings: dict
) -> dict[str, Any]:
    report = write_end_to_end_report(Path(run_dir), curation, sweep, plan, timings)
    if not in_prefect_run():
        return report
    png = base64.b64encode(Path(report["paths"]["png"]).read_bytes()).decode()
    from flows.artifacts import artifact_key

    create_markdown_artifact(
        markdown=Path(report["paths"]["markdown"]).read_text()
        + f"\n![observed vs predicted](data:image/png;base64,{png})\n",
        key=artifact_key("end-to-end-report", Path(run_dir).name),
        description=f"end-to-end report, {run_dir}",
    )
    return report


def _timed(timings: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    out = fn()
    timings[name] = round(time.perf_counter() - start, 2)
    _log(f"{name}: {timings[name]:.1f} s")
    return out


def _run_name(params: dict[str, Any]) -> str:
    """The curation run's name: the flow run is named after it."""
    from curate.config import load_config

    return load_config(params["config_path"], list(params.get("overrides") or [])).name


@flow(
    name="end-to-end",
    log_prints=True,
    flow_run_name=flow_run_namer(_run_name, "end-to-end"),
)
def end_to_end(
    config_path: str,
    train_config: str = DEFAULT_TRAIN,
    sweep_config: str = DEFAULT_SWEEP,
    nproc: int = 1,
    overrides: list[str] | None = None,
    train_overrides: list[str] | None = None,
    compute_factor: float = 4.0,
    local_curation: bool = False,
    n_bootstrap: int | None = None,
    launcher: str = "subprocess",
) -> dict[str, Any]:
    """Curate ``config_path`` (``overrides``: ``key=value``), sweep, fit, train ≥
    ``compute_factor`` × the largest sweep point, report observed vs predicted."""

    def curate(cfg: Any) -> dict[str, Any]:
        if local_curation:
            from curate.runner import run_pipeline

            return run_pipeline(cfg)
        from flows.curate import run_curate

        return run_curate(cfg)  # a subflow: this flow's API, its own local Ray

    def pretrain_run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        from flows.pretrain import pretrain

        return pretrain(*args, **kwargs)  # a subflow

    return _chain(config_path, train_config, sweep_config, nproc, overrides, train_overrides,
                  compute_factor, n_bootstrap, launcher, curate, pretrain_run, as_task)  # fmt: skip


def run_local(
    config_path: str,
    train_config: str = DEFAULT_TRAIN,
    sweep_config: str = DEFAULT_SWEEP,
    overrides: list[str] | None = None,
    train_overrides: list[str] | None = None,
    compute_factor: float = 4.0,
    n_bootstrap: int | None = None,
) -> dict[str, Any]:
    """The same chain in this process, without Prefect or Ray (one training process)."""
    from curate.runner import run_pipeline
    from flows.pretrain import pretrain_chain

    def pretrain_run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return pretrain_chain(*args, **kwargs, call=in_process)

    return _chain(config_path, train_config, sweep_config, 1, overrides, train_overrides,
                  compute_factor, n_bootstrap, "inprocess", run_pipeline, pretrain_run,
                  in_process)  # fmt: skip


def _chain(
    config_path: str,
    train_config: str,
    sweep_config: str,
    nproc: int,
    overrides: list[str] | None,
    train_overrides: list[str] | None,
    compute_factor: float,
    n_bootstrap: int | None,
    launcher: str,
    curate: Callable[[Any], dict[str, Any]],
    pretrain: Callable[..., dict[str, Any]],
    call: Callable[..., Any],
) -> dict[str, Any]:
    """The end-to-end steps, once for both executors: ``curate`` (the curation executor),
    ``pretrain`` (the pretrain flow or its chain in-process) and ``call(task, *args)`` for the
    other steps (as Prefect tasks, or their plain functions)."""
    from curate.config import load_config
    from curate.layout import RunLayout

    cfg = load_config(config_path, list(overrides or []))
    run_dir = local_run_dir(cfg)
    timings: dict[str, float] = {}
    stats = _timed(timings, "curate", lambda: curate(cfg))
    curation = curation_summary(cfg, stats)
    shards = RunLayout(str(run_dir)).shards_dir
    sweep = _timed(timings, "sweep + fit", lambda: call(
        sweep_task, sweep_config, shards, str(run_dir / "sweep"), n_bootstrap))  # fmt: skip
    plan = call(plan_task, train_config, sweep["sweep_set"], list(train_overrides or []), shards,
                sweep["largest"]["flops"], compute_factor, nproc,
                sweep["param_count"])  # fmt: skip
    train_dir = run_dir / "train"
    if finished(train_dir, plan["steps"]):
        _log(f"{train_dir}: trained already ({plan['steps']} steps), not trained again")
    else:
        _timed(timings, "pretrain", lambda: pretrain(
            shards, train_config, str(train_dir), nproc=nproc, law=sweep["fit"],
            overrides=plan["overrides"], launcher=launcher))  # fmt: skip
    return call(report_task, str(run_dir), curation, sweep, plan, timings)
