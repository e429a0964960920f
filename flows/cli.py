"""``sluice``: the command line of the pipeline.

sluice server [--background|--stop]        Prefect server on 127.0.0.1:4200 (UI + API)
sluice run --config F [--set k=v]...        curate with Prefect tasks on Ray
sluice status RUN                           every step: done / stale / pending, with counts
sluice demo                                 end-to-end on data/sample (configs/default.yaml)
sluice end-to-end --config F                curate → sweep → fit → train → report
sluice ablate ABLATION.yaml | --config A --vs B   train on each variant, compare with intervals
sluice inspect RUN                          sample kept/removed/quarantined docs per reason
sluice train-tokenizer --run R              (re)train a run's tokenizer
sluice train-quality|train|sweep ...        forwarded to their own modules

Exit codes: 0 done, 2 a usage or config error (found before anything starts), 1 a failed run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from flows import runtime  # noqa: F401 - telemetry off first

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
USAGE_ERROR = 2  # a usage or config error, found before anything starts (argparse's code too)


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print ``sluice: error: <message>`` on stderr and exit with ``code``."""
    print(f"sluice: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("sluice")
    except PackageNotFoundError:
        return "unknown"


def _load(
    config: str | Path,
    overrides: Sequence[str],
    run_name: str | None = None,
    ray_address: str | None = None,
):
    from curate.config import ConfigError, load_config

    sets = list(overrides)
    if run_name:
        sets.append(f"name={run_name}")
    if ray_address:
        sets.append(f"ray.address={ray_address}")
    try:
        return load_config(config, sets)
    except ConfigError as e:
        fail(str(e))


def _print_summary(stats: dict) -> None:
    from curate.report import funnel_markdown, quality_model_markdown
    from curate.stage import StageStats

    stages = {
        k: StageStats.from_dict(
            {
                f: v[f]
                for f in (
                    "stage",
                    "docs_in",
                    "bytes_in",
                    "kept",
                    "bytes_kept",
                    "removed",
                    "quarantined",
                )
            }
        )
        for k, v in stats["stages"].items()
    }
    print(funnel_markdown(stages))
    model_line = quality_model_markdown(stats.get("quality_model")).strip()
    if model_line:
        print(model_line + "\n")
    for split, info in stats.get("shards", {}).items():
        print(f"shards/{split}: {info['sequences']:,} sequences, {info['tokens']:,} tokens")


def check_plan(cfg) -> None:
    """The options that name data, checked before Prefect or Ray start: SystemExit with the
    keys, what they name and what they matched."""
    from curate.config import ConfigError
    from curate.plan import check_data_options, list_parts

    try:
        check_data_options(cfg, list_parts(cfg))
    except (ConfigError, ValueError, OSError) as e:
        fail(str(e))


def check_training_configs(train_config: str, train_set: Sequence[str], sweep_config: str) -> None:
    """The training and sweep configs of an end-to-end run, validated before anything starts."""
    from curate.config import ConfigError
    from train.sweep import SweepConfig
    from train.trainer import TrainConfig

    try:
        TrainConfig.from_yaml(train_config, list(train_set))
        SweepConfig.from_yaml(sweep_config)
    except ConfigError as e:
        fail(str(e))


def check_force(cfg, step: str | None) -> None:
    """``--force STEP`` names a step of the plan (exit 2 naming the steps, and the closest)."""
    import difflib

    from curate.plan import build_plan

    if step is None:
        return
    names = [s.name for s in build_plan(cfg).steps]
    if step not in names:
        close = difflib.get_close_matches(step, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        fail(f"--force {step}: no such step{hint}; steps: {', '.join(names)}")


def warn_stale(cfg) -> None:
    """Before a run into an existing run directory: say which steps are stale (ran with
    another config, code or input) and will be recomputed."""
    from curate.layout import RunLayout
    from curate.plan import NotDone, run_states
    from curate.storage import exists

    if not exists(RunLayout(cfg.run_url).parts):
        return
    try:
        states = run_states(cfg)[1]
    except (NotDone, OSError, ValueError):
        return
    stale = [s for s in states if s.state == "stale"]
    if stale:
        why = "; ".join(
            f"{s.step.name} ({', '.join(sorted(r for r in s.counts if r != 'done'))})"
            for s in stale
        )
        print(
            f"sluice: warning: run {cfg.name}: {len(stale)} stale step(s) will be recomputed: "
            f"{why}",
            file=sys.stderr,
            flush=True,
        )


def curate(
    cfg,
    local: bool = False,
    api_url: str | None = None,
    verify: bool = False,
    force_from: str | None = None,
) -> dict:
    """Run one curation job: Prefect flow on Ray, or in this process with ``local``. Every
    check that can fail before a step runs (config, input files, ``--force``) runs first."""
    from curate.runner import RunLocked

    check_plan(cfg)
    check_force(cfg, force_from)
    warn_stale(cfg)
    try:
        return _curate(cfg, local, api_url, verify, force_from)
    except RunLocked as e:
        fail(str(e))


def _curate(
    cfg, local: bool, api_url: str | None, verify: bool, force_from: str | None = None
) -> dict:
    if local:
        from curate.runner import run_pipeline

        def on_step(step: str, seconds: float) -> None:
            print(f"{step}: {seconds:.1f} s", flush=True)

        return run_pipeline(cfg, on_step=on_step, verify=verify, force_from=force_from)
    url = _api_for(cfg, api_url)
    from flows.curate import run_curate

    return run_curate(cfg, url, verify, force_from)


def _api_for(cfg, api_url: str | None = None) -> str:
    """The Prefect API of a run (``flows.server.ensure_api``), announced on one line."""
    from flows.server import ServerError, ensure_api_started

    try:
        url, started = ensure_api_started(
            api_url or cfg.prefect.api_url, start=cfg.prefect.start_server
        )
    except ServerError as e:
        fail(str(e))
    note = " (started here; it keeps running: `sluice server --stop` ends it)" if started else ""
    print(f"Prefect API {url}; UI {url.removesuffix('/api')}{note}", flush=True)
    return url


def cmd_server(args: argparse.Namespace) -> int:
    from flows import server

    home = server.state_dir()
    if args.stop:
        stopped = server.stop_background()
        print(f"stopped ({home})" if stopped else f"no background server of {home}")
        return 0
    try:
        if args.background:
            url, started = server.start_background_owned(args.host, args.port)
            print(
                f"Prefect server {'started' if started else 'already running'} ({home}): "
                f"UI http://{args.host}:{args.port}\nexport PREFECT_API_URL={url}"
            )
            return 0
        return server.run_foreground(args.host, args.port)
    except server.ServerError as e:
        fail(str(e))


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args.config, args.set, args.run_name, args.ray_address)
    if args.dry_run:
        from curate.plan import describe

        check_plan(cfg)
        print(describe(cfg))
        return 0
    stats = curate(cfg, local=args.local, verify=args.verify, force_from=args.force)
    _print_summary(stats)
    print(f"run directory: {cfg.run_url}")
    return 0


def _end_to_end(config: str | Path, args: argparse.Namespace, run_name: str | None = None) -> dict:
    """Run the ``end-to-end`` flow (Prefect server, curation on Ray), or ``run_local``."""
    cfg = _load(config, args.set, run_name or args.run_name)  # fails early on a config error
    check_plan(cfg)
    check_training_configs(args.train_config, args.train_set, args.sweep_config)
    overrides = [*args.set, f"name={cfg.name}"]
    kwargs = {
        "train_config": args.train_config,
        "sweep_config": args.sweep_config,
        "overrides": overrides,
        "train_overrides": args.train_set,
        "compute_factor": args.compute_factor,
    }
    if args.local:
        from flows.end_to_end import run_local

        return run_local(str(config), **kwargs)
    url = _api_for(cfg)
    from flows.curate import _api
    from flows.end_to_end import end_to_end

    with _api(url):
        return end_to_end(str(config), nproc=args.nproc, **kwargs)


def print_end_to_end(report: dict) -> None:
    """Where the report is, and its numbers in a few lines."""
    c, m = report["curation"], report["main_run"]
    tokens = ", ".join(f"{k} {v:,}" for k, v in c["shard_tokens"].items())
    pct = int(round(100 * report["level"]))
    print(
        f"curation: {c['docs_in']:,} documents in, {c['docs_kept']:,} kept; shards: {tokens} tokens"
    )
    print(f"sweep: {report['sweep']['points']} points, {report['sweep'].get('describe')}")
    for line in report["sweep"].get("summary_lines") or []:
        print(f"  {line}")
    print(
        f"main run: N = {m['n_params']:,}, D = {m['tokens']:,} tokens "
        f"({m['compute_ratio']:.1f}× the largest sweep point's compute); val loss "
        f"{m['first_val_loss']:.4f} at the first eval"
    )
    if not report.get("identified", True):
        print(f"final val loss {report['observed']:.4f}; predicted: {report['prediction']}")
    else:
        print(
            f"final val loss {report['observed']:.4f} vs predicted {report['predicted']:.4f} "
            f"[{report['lo']:.4f}, {report['hi']:.4f}] ({pct}%): |pred − obs|/obs = "
            f"{100 * report['rel_error']:.2f}%, "
            f"{'inside' if report['inside_interval'] else 'outside'} the interval"
        )
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in report["timings_s"].items()))
    print(
        f"report: {report['paths']['markdown']} (+ .json, .png); run directory {report['run_dir']}"
    )


def demo_steps(args: argparse.Namespace) -> list[tuple[str, Callable[[], object]]]:
    """The demo: the end-to-end flow on configs/default.yaml as the run ``demo``."""

    def end_to_end_sample() -> dict:
        report = _end_to_end(DEFAULT_CONFIG, args, args.run_name or "demo")
        print_end_to_end(report)
        return report

    return [
        ("data/sample → shards → scaling sweep → fitted law → training run → report",
         end_to_end_sample),
    ]  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    for i, (title, step) in enumerate(demo_steps(args), 1):
        print(f"== demo step {i}: {title}", flush=True)
        step()
    print(f"demo finished in {time.perf_counter() - start:.0f} s wall")
    return 0


def cmd_end_to_end(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    print_end_to_end(_end_to_end(args.config, args))
    print(f"finished in {time.perf_counter() - start:.0f} s wall")
    return 0


def load_ablation_args(args: argparse.Namespace):
    """The ablation of ``sluice ablate``: an ablation config, or ``--config A --vs B...``;
    ``--set`` overrides every variant's curation config, the other options the ablation's."""
    from curate.ablation import ablation_from_configs, load_ablation
    from curate.config import ConfigError

    if bool(args.ablation) == bool(args.config):
        fail("sluice ablate: give an ablation config, or --config A.yaml --vs B.yaml")
    if args.config and not args.vs:
        fail("sluice ablate: --config needs at least one --vs (the variants to compare)")
    fields = {
        k: v
        for k, v in {
            "tokens": args.tokens,
            "seeds": args.seeds,
            "tokenizer": args.tokenizer,
            "name": args.run_name,
            "train": args.train_config,
        }.items()
        if v is not None
    }
    try:
        if args.ablation:
            abl = load_ablation(args.ablation)
            abl = abl.model_validate({**abl.model_dump(), **fields})
        else:
            fields.setdefault("tokens", 262144)
            fields.setdefault("train", str(REPO_ROOT / "configs/train/tiny.yaml"))
            abl = ablation_from_configs([args.config, *args.vs], **fields)
        abl.set += list(args.set)
        abl.train_set += list(args.train_set)
        if args.eval:
            from curate.readers import InputSpec

            abl.eval.inputs = [InputSpec(path=p, format="text", domain="eval") for p in args.eval]
        from curate.ablation import variant_config

        for v in abl.variants:  # every variant's config validates before anything runs
            check_plan(variant_config(abl, v, None))
    except (ConfigError, ValueError) as e:
        fail(str(e))
    return abl


def cmd_ablate(args: argparse.Namespace) -> int:
    abl = load_ablation_args(args)
    if len(abl.seeds) < 3:
        print(f"sluice: warning: {len(abl.seeds)} seed(s): intervals need ≥ 2, and are wide "
              "below 3", file=sys.stderr, flush=True)  # fmt: skip
    start = time.perf_counter()
    if args.local:
        from flows.ablate import run_local

        report = run_local(abl)
    else:
        from flows.ablate import ablate
        from flows.curate import _api

        cfg = _load(abl.base or abl.variants[0].config, [])
        with _api(_api_for(cfg)):
            report = ablate(abl)
    print(report["markdown"])
    print(f"report: {report['paths']['markdown']} (+ .json); "
          f"finished in {time.perf_counter() - start:.0f} s wall")  # fmt: skip
    return 0


def _sample_rows(table, n: int, width: int) -> list[str]:
    out = []
    for row in table.slice(0, n).to_pylist():
        text = " ".join(str(row.get("text", row.get("detail", ""))).split())
        out.append(f"    [{row['id']}] {row['source']}: {textwrap.shorten(text, width) or '∅'}")
    return out


def existing_run(run: str):
    """The layout of run directory ``run``; exit 2 when it holds no run (no config.json)."""
    from curate.layout import RunLayout
    from curate.storage import exists

    layout = RunLayout(run)
    if not exists(layout.config):
        fail(f"{run}: not a run directory (no config.json); runs are made by `sluice run`")
    return layout


def cmd_inspect(args: argparse.Namespace) -> int:
    from curate.inspect import inspect_run

    existing_run(args.run)
    try:
        print(inspect_run(args.run, args.n, args.stage, args.seed, args.width), end="")
    except ValueError as e:
        fail(str(e))
    return 0


def _validated(data: dict, overrides: Sequence[str]):
    """A run's saved config with ``--set`` overrides, validated (exit 2 naming the key)."""
    from pydantic import ValidationError

    import flows.settings  # noqa: F401 - the ray/prefect sections of a saved config
    from curate.config import ConfigError, PipelineConfig, format_errors
    from curate.overrides import apply_overrides

    try:
        return PipelineConfig.model_validate(apply_overrides(data, list(overrides)))
    except ConfigError as e:
        fail(str(e))
    except ValidationError as e:
        fail(format_errors(e, "config.json", list(overrides), PipelineConfig))


def cmd_status(args: argparse.Namespace) -> int:
    from curate.config import ConfigError
    from curate.plan import NotDone, describe_status

    layout = existing_run(args.run)
    saved = layout.saved_config()
    pinned = [f"run_dir={layout.root}", f"name={saved.get('name', Path(layout.root).name)}"]
    if args.config:  # compare the run against this config
        cfg = _load(args.config, [*args.set, *pinned])
    else:
        cfg = _validated({**saved, "run_dir": layout.root}, args.set)
    try:
        print(describe_status(cfg))
    except (ConfigError, NotDone, ValueError) as e:
        fail(f"{args.run}: {e}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from curate.html_report import write_report_html
    from curate.layout import RunLayout
    from curate.progress import heartbeat
    from train.report import training_section

    existing_run(args.run)
    with heartbeat("report"):
        train = training_section(args.train or RunLayout(args.run).path("train"))
        extra = [train] if train is not None else []
        path = write_report_html(args.run, extra, args.out)
    print(path)
    if args.publish:
        from flows.artifacts import publish_report_artifacts
        from flows.server import ensure_api

        ensure_api()
        keys = publish_report_artifacts(args.run, extra)
        print(f"published {len(keys)} artifacts: {', '.join(keys)}")
    return 0


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from curate.plan import run_states
    from curate.runner import run_step
    from curate.storage import write_json_atomic

    layout = existing_run(args.run)
    cfg = _validated({**layout.saved_config(), "run_dir": layout.root}, args.set)
    stats = run_step(cfg, "tokenizer")  # the run's own step: skipped when it is done
    if args.set:  # the run's config is now this one: status compares the steps against it
        write_json_atomic(
            {"hash": cfg.hash(), "config": cfg.model_dump(mode="json")}, layout.config
        )
    print(json.dumps(stats, indent=2))
    print(f"tokenizer: {layout.tokenizer_model}")
    states = {s.step.name: s.state for s in run_states(cfg)[1]}
    stale = [n for n in ("encode", "shards") if states.get(n) != "done"]
    if stale:
        sets = " ".join(f"--set {s}" for s in args.set)
        print(
            f"sluice: warning: {', '.join(stale)} stale: the shards were encoded with another "
            f"tokenizer; `sluice run --config CONFIG --run-name {cfg.name} {sets}` re-encodes them",
            file=sys.stderr,
        )
    return 0


def cmd_export_tokenizer(args: argparse.Namespace) -> int:
    from curate.storage import exists
    from curate.tokenizer import HF_TOKENIZER_FILE, export_hf_tokenizer

    layout = existing_run(args.run)
    if not exists(layout.tokenizer_model):
        fail(f"{args.run}: no tokenizer yet ({layout.tokenizer_model}); `sluice run` trains it")
    out = args.out or layout.path("tokenizer", HF_TOKENIZER_FILE)
    try:
        print(export_hf_tokenizer(layout.tokenizer_model, out))
    except RuntimeError as e:
        fail(str(e))
    return 0


def _forward(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).main(args.argv) or 0)

    return run


def build_parser(with_deploy: bool = True) -> argparse.ArgumentParser:
    """The CLI's parser; ``with_deploy=False`` lists ``deploy`` without its options, so that
    the other commands do not import Prefect (flows.deploy's flows need it at import: ~1 s)."""
    p = argparse.ArgumentParser(
        prog="sluice",
        description="Sluice: pretraining-corpus pipeline",
        epilog="exit codes: 0 done, 2 a usage or config error, 1 a failed run",
    )
    p.add_argument("--version", action="version", version=f"sluice {version()}")
    # -v/-q before the command (dest verbose/quiet) or after it (verbose_sub/quiet_sub)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log lines")
    p.add_argument("-q", "--quiet", action="count", default=0, help="errors only")
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-v", "--verbose", dest="verbose_sub", action="count", default=0,
                           help="more log lines (the sluice.* loggers at INFO)")  # fmt: skip
    verbosity.add_argument("-q", "--quiet", dest="quiet_sub", action="count", default=0,
                           help="errors only: no progress bars or heartbeats")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser

    def sub_parser(*a, **kw):  # every command takes -v/-q
        return add_parser(*a, **{"parents": [verbosity], **kw})

    sub.add_parser = sub_parser

    s = sub.add_parser("server", help="Prefect server on 127.0.0.1 (UI + API)")
    s.add_argument("--host", default=runtime.LOCAL_HOST)
    s.add_argument("--port", type=int, default=4200)
    s.add_argument(
        "--background",
        action="store_true",
        help="detach; pid file, log and database in $SLUICE_HOME (default <checkout>/.sluice)",
    )
    s.add_argument(
        "--stop", action="store_true", help="stop the background server of this SLUICE_HOME"
    )
    s.set_defaults(fn=cmd_server)

    def run_options(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. --set tokenizer.vocab_size=8000",
        )
        q.add_argument("--run-name", help="the run's name (run directory runs/<name>)")
        q.add_argument(
            "--local",
            action="store_true",
            help="run every step in this process (no Prefect, no Ray)",
        )

    r = sub.add_parser("run", help="curate with the Prefect flow on Ray")
    r.add_argument("--config", required=True)
    r.add_argument("--ray-address", help="'auto' or ray://host:port (default: a local Ray)")
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan: steps, parts, what is done and what would run, and why",
    )
    r.add_argument(
        "--verify",
        action="store_true",
        help="a finished step is skipped only if its outputs have the recorded sha256 "
        "(default: the recorded sizes); a damaged one is recomputed",
    )
    r.add_argument(
        "--force",
        metavar="STEP",
        help="recompute STEP and every step after it, even when done (steps: --dry-run)",
    )
    run_options(r)
    r.set_defaults(fn=cmd_run)

    st = sub.add_parser("status", help="every step of a run: done / stale / pending, with counts")
    st.add_argument("run", help="run directory, e.g. runs/demo")
    st.add_argument("--config", help="compare the run against this config (default: its own)")
    st.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    st.set_defaults(fn=cmd_status)

    def end_to_end_options(q: argparse.ArgumentParser) -> None:
        run_options(q)
        q.add_argument("--train-config", default=str(REPO_ROOT / "configs/train/tiny.yaml"))
        q.add_argument("--sweep-config", default=str(REPO_ROOT / "configs/sweep/demo.yaml"))
        q.add_argument(
            "--train-set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a key of the main training run, e.g. --train-set steps=400",
        )
        q.add_argument(
            "--compute-factor",
            type=float,
            default=4.0,
            help="main run's compute / the largest sweep point's (default 4)",
        )
        q.add_argument("--nproc", type=int, default=1, help="training processes (torchrun)")

    d = sub.add_parser(
        "demo", help="end-to-end on data/sample (configs/default.yaml) into runs/demo"
    )
    end_to_end_options(d)
    d.set_defaults(fn=cmd_demo)

    e = sub.add_parser(
        "end-to-end", help="curate, sweep, fit the law, train, report observed vs predicted"
    )
    e.add_argument("--config", required=True)
    end_to_end_options(e)
    e.set_defaults(fn=cmd_end_to_end)

    ab = sub.add_parser(
        "ablate",
        help="train the same model on each variant of the data; losses with intervals",
    )
    ab.add_argument("ablation", nargs="?", help="an ablation config (configs/ablation/*.yaml)")
    ab.add_argument("--config", help="the baseline's curation config (with --vs)")
    ab.add_argument("--vs", action="append", default=[], metavar="CONFIG",
                    help="a curation config to compare with --config (repeatable)")  # fmt: skip
    ab.add_argument("--train-config", help="the training config (default: the ablation's; "
                    "with --config/--vs configs/train/tiny.yaml)")  # fmt: skip
    ab.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE")
    ab.add_argument("--tokens", type=int, help="token budget of every training run")
    ab.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")],
                    help="comma-separated seeds (default 0,1,2)")  # fmt: skip
    ab.add_argument("--tokenizer", help="a SentencePiece model every variant uses "
                    "(default: trained on the union of the variants' documents)")  # fmt: skip
    ab.add_argument("--eval", action="append", default=[], metavar="PATH",
                    help="held-out clean text to evaluate on (default: a held-out slice)")  # fmt: skip
    run_options(ab)
    ab.set_defaults(fn=cmd_ablate)

    i = sub.add_parser("inspect", help="sample kept/removed/quarantined documents per reason")
    i.add_argument("run", help="run directory, e.g. runs/default")
    i.add_argument("--stage", help="only this stage")
    i.add_argument("-n", type=int, default=3, help="documents per reason")
    i.add_argument("--width", type=int, default=400, help="snippet characters")
    i.add_argument("--seed", type=int, default=0, help="another seed shows other documents")
    i.set_defaults(fn=cmd_inspect)

    rp = sub.add_parser("report", help="write RUN/report.html (self-contained) and print its path")
    rp.add_argument("run", help="run directory, e.g. runs/default")
    rp.add_argument("--train", help="training dir with metrics.jsonl (default RUN/train)")
    rp.add_argument("--out", help="output file (default RUN/report.html)")
    rp.add_argument("--publish", action="store_true", help="also publish Prefect artifacts")
    rp.set_defaults(fn=cmd_report)

    deploy_parser = sub.add_parser(
        "deploy", help="curation (and pretraining on its shards) as Prefect deployments"
    )
    if with_deploy:
        from flows import deploy

        deploy.build_parser(deploy_parser)

    t = sub.add_parser("train-tokenizer", help="(re)train the tokenizer of a run")
    t.add_argument("--run", required=True)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.set_defaults(fn=cmd_train_tokenizer)

    x = sub.add_parser(
        "export-tokenizer",
        help="write a run's tokenizer as a Hugging Face tokenizer.json (needs the hf extra)",
    )
    x.add_argument("run", help="run directory, e.g. runs/demo")
    x.add_argument("--out", help="output file (default RUN/tokenizer/tokenizer.json)")
    x.set_defaults(fn=cmd_export_tokenizer)

    for name, (module, help_text) in FORWARDED.items():
        f = sub.add_parser(
            name, help=f"{help_text} (options: sluice {name} --help)", add_help=False
        )
        f.add_argument("argv", nargs=argparse.REMAINDER)
        f.set_defaults(fn=_forward(module))
    return p


# Commands implemented elsewhere: `sluice <name> ARGS` calls `<module>.main(ARGS)`.
FORWARDED = {
    "train-quality": ("curate.filters.quality_cli", "train the quality classifier"),
    "train": ("train.cli", "pretrain a GPT on a run's shards"),
    "sweep": ("train.sweep_cli", "scaling sweep"),
}


VERBOSITY_FLAGS = {"-v": 1, "--verbose": 1, "-q": -1, "--quiet": -1}


def set_verbosity(level: int) -> None:
    """``-v`` (1): the ``sluice.*`` loggers at INFO; ``-q`` (-1): errors only, no progress bars
    or heartbeats (``SLUICE_QUIET=1``, inherited by workers); 0: warnings and heartbeats."""
    import logging

    logging.basicConfig(format="%(name)s: %(message)s")
    logger = logging.getLogger("sluice")
    logger.setLevel({1: logging.INFO, -1: logging.ERROR}.get(level, logging.WARNING))
    if level < 0:
        os.environ["SLUICE_QUIET"] = "1"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a not in VERBOSITY_FLAGS), None)
    if command in FORWARDED:  # argparse would eat their options; -v/-q go before or after
        rest = [a for a in argv[argv.index(command) + 1 :] if a not in VERBOSITY_FLAGS]
        set_verbosity(sum(VERBOSITY_FLAGS.get(a, 0) for a in argv))
        return int(importlib.import_module(FORWARDED[command][0]).main(rest) or 0)
    args = build_parser(with_deploy="deploy" in argv).parse_args(argv)
    set_verbosity(
        args.verbose + getattr(args, "verbose_sub", 0) - args.quiet - getattr(args, "quiet_sub", 0)
    )
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
