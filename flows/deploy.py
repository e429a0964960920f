"""``sluice deploy``: the curation flow as a Prefect deployment on a cron schedule, and the
``pretrain`` deployment (a typed form in the Prefect UI), optionally chained to curation.

Two ways to run the scheduled flow runs:

- ``--serve`` (default): ``flow.serve`` registers the deployment and runs its scheduled runs in
  this process (foreground, until Ctrl-C); nothing else to start.
- ``--work-pool NAME``: ``flow.from_source(<repo>, entrypoint).deploy`` registers the deployment
  on a ``process`` work pool (created if missing) and returns; a worker runs the flow runs:
  ``prefect worker start --pool NAME`` (with the same ``PREFECT_API_URL``).

The deployed flow is ``sluice-curate`` (below): it loads the YAML config at run time (so an
edited config applies to the next scheduled run) and runs ``flows.curate.curate_flow`` on Ray as
a subflow. A rerun of the same config resumes the same run directory: parts whose input and
config did not change are skipped, changed inputs are recomputed. It publishes where its shards
are as a link artifact (``sluice-<name>-shards``).

``sluice-pretrain`` (``--flow pretrain``) trains on curated shards: a run directory, a shards
directory, or the id of a completed ``sluice-curate`` flow run (whose shards artifact names
them); the training settings are a pydantic model, so the UI shows them as a form. With
``--flow curate --then pretrain``, a Prefect deployment trigger (an automation owned by the
pretrain deployment, listed and switchable under Automations) runs ``sluice-pretrain`` when a run
of the curate deployment is Completed: ``sluice-curate``'s ``on_completion`` hook emits
``sluice.curate.completed`` with the shards URL in its payload, and the trigger's parameters
(``shards``, ``curate_run``) are templated from that event. Deploying ``pretrain`` alone
removes that trigger (Prefect re-creates a deployment's triggers at every deploy).
"""

# no `from __future__ import annotations`: a served flow may run from a pickled copy of
# pretrain_job, whose globals need not hold TrainingSettings to resolve a string annotation
import argparse
import asyncio
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.deployments.runner import EntrypointType
from pydantic import BaseModel, Field

from flows import runtime  # noqa: F401 - telemetry off before prefect and ray load
from flows.runtime import flow_run_namer

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "default.yaml")
DEFAULT_POOL_TYPE = "process"
DEFAULT_TRAIN_CONFIG = "configs/train/tiny.yaml"
SHARDS_ARTIFACT = "shards"  # curate_job's link artifact: sluice-<name>-shards
CURATE_COMPLETED = "sluice.curate.completed"  # emitted once a sluice-curate run is Completed


def job_config(config: str, overrides: Sequence[str] | None) -> Any:
    """The PipelineConfig of a ``sluice-curate`` run (``config`` relative to the repository
    if not absolute)."""
    from curate.config import load_config

    path = Path(config)
    return load_config(path if path.is_absolute() else REPO_ROOT / path, list(overrides or []))


def shards_url(cfg: Any) -> str:
    """Where a curation run's shards are, as a URL (``file://`` for a local run directory)."""
    from curate.layout import RunLayout

    shards = RunLayout(cfg.run_url).shards_dir
    return shards if "://" in shards else Path(shards).resolve().as_uri()


def announce_shards(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_completion`` hook of ``sluice-curate``: once the run is Completed, emit
    ``sluice.curate.completed`` (resource: this flow run; related: its deployment; payload: the
    shards URL), the event the chained ``sluice-pretrain`` trigger listens for.

    Why not Prefect's own ``prefect.flow-run.Completed``: the server links each state event to
    the previous state's event, and a run the scheduler created less than 5 minutes before it
    started has no ``Scheduled`` event, so the trigger service holds its later state events for
    15 minutes (``prefect.server.events.ordering``). This event has no such link."""
    from prefect.events import emit_event

    params = flow_run.parameters or {}
    cfg = job_config(params.get("config", DEFAULT_CONFIG), params.get("overrides"))
    related = [{"prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                "prefect.resource.role": "flow"}]  # fmt: skip
    if flow_run.deployment_id:
        related.append({"prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}",
                        "prefect.resource.role": "deployment"})  # fmt: skip
    emit_event(
        event=CURATE_COMPLETED,
        resource={
            "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
            "prefect.resource.name": flow_run.name,
        },  # fmt: skip
        related=related,
        payload={"shards": shards_url(cfg), "run": cfg.name, "flow_run_id": str(flow_run.id)},
    )


@flow(
    name="sluice-curate",
    log_prints=True,
    on_completion=[announce_shards],
    flow_run_name=flow_run_namer(
        lambda params: job_config(params["config"], params.get("overrides")).name, "sluice-curate"
    ),
)
def curate_job(
    config: str = DEFAULT_CONFIG,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Curate with ``config`` (path, relative to the repository if not absolute) and
    ``key=value`` overrides; publish the run report as artifacts, and where the shards are;
    returns stats.json."""
    from prefect.artifacts import create_link_artifact

    from flows.artifacts import artifact_key
    from flows.curate import run_curate

    cfg = job_config(config, overrides)
    stats = run_curate(cfg)  # writes report.html and publishes it as artifacts
    create_link_artifact(
        link=shards_url(cfg),
        link_text=shards_url(cfg),
        key=artifact_key("sluice", cfg.name, SHARDS_ARTIFACT),
        description=f"token shards of run {cfg.name} (what sluice-pretrain trains on)",
    )
    return stats


class TrainingSettings(BaseModel):
    """What ``sluice-pretrain`` trains (a form in the Prefect UI)."""

    config: str = Field(
        DEFAULT_TRAIN_CONFIG,
        description="training YAML; relative paths are relative to the repository",
    )
    overrides: list[str] = Field(
        default_factory=list, description="KEY=VALUE overrides of the training config"
    )
    nproc: int = Field(1, ge=1, le=64, description="processes (torchrun when more than 1)")
    predict: bool = Field(
        False, description="predict the final val loss from a fitted scaling law first"
    )
    law: str = Field(
        "",
        description="fit.json written by `sluice sweep` (default: `RUN_DIR/sweep/fit.json`)",
    )


DEFAULT_TRAINING = TrainingSettings()


def _local_path(where: str) -> Path:
    """A local path from a path or ``file://`` URL (relative: to the repository)."""
    if where.startswith("file://"):
        from urllib.parse import unquote, urlparse

        where = unquote(urlparse(where).path)
    elif "://" in where:
        raise ValueError(
            f"shards {where}: training memory-maps its shards, give a local or shared-disk path"
        )
    path = Path(where).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def shards_of_curate_run(run_id: str) -> str:
    """Where the completed ``sluice-curate`` flow run ``run_id`` wrote its shards (its
    ``sluice-<name>-shards`` link artifact)."""
    import re
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    try:
        uid = UUID(run_id.removeprefix("prefect.flow-run."))
    except ValueError:
        raise ValueError(f"curate_run {run_id!r} is not a flow run id") from None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uid)
        if not (run.state and run.state.is_completed()):
            state = run.state.name if run.state else "not started"
            raise ValueError(f"curate run {run.name} ({uid}) is {state}, not Completed")
        links = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uid])))
    for art in links:
        found = re.search(r"\]\((.+)\)\s*$", str(art.data or ""))
        if art.key and art.key.endswith(f"-{SHARDS_ARTIFACT}") and found:
            return found.group(1)
    raise ValueError(f"curate run {run.name} ({uid}) published no shards artifact")


def resolve_shards(shards: str, curate_run: str) -> Path:
    """The shards directory to train on: ``shards`` (a run or shards directory, path or
    ``file://`` URL), else the shards of the completed curate run ``curate_run``."""
    from curate.layout import RunLayout
    from curate.shards.format import MANIFEST_NAME

    if not shards and not curate_run:
        raise ValueError("give shards (a curated run or shards directory) or curate_run")
    path = _local_path(shards or shards_of_curate_run(curate_run))
    inner = Path(RunLayout(str(path)).shards_dir)
    return inner if (inner / MANIFEST_NAME).exists() else path


@flow(name="sluice-pretrain", log_prints=True)
def pretrain_job(
    shards: str = "",
    curate_run: str = "",
    training: TrainingSettings = DEFAULT_TRAINING,
    out_dir: str = "",
) -> dict[str, Any]:
    """Train on curated shards: check them (manifest, sha256, vocab), optionally predict the
    final loss from a fitted law, train, and show progress as artifacts while it runs.

    Args:
        shards: a curated run directory or its shards directory (path or file:// URL); empty:
            the shards of `curate_run`
        curate_run: id of a completed sluice-curate flow run (set by the chained trigger)
        training: the training config, its overrides, processes, and whether to predict
        out_dir: where the run writes checkpoints and metrics (default:
            `RUN_DIR/pretrain/FLOW_RUN_NAME`)
    """
    from prefect.runtime import flow_run

    from flows.pretrain import pretrain

    shards_dir = resolve_shards(shards, curate_run)
    run_dir = shards_dir.parent
    out = _local_path(out_dir) if out_dir else run_dir / "pretrain" / str(flow_run.name)
    law = None
    if training.predict:
        law = str(_local_path(training.law) if training.law else run_dir / "sweep" / "fit.json")
        if not Path(law).exists():
            raise FileNotFoundError(f"predict: no fitted law at {law} (run `sluice sweep`)")
    print(f"training on {shards_dir} into {out}" + (f" (from curate run {curate_run})"
          if curate_run else ""))  # fmt: skip
    # .fn: the steps run as tasks of this flow run, so their artifacts show on its page
    return pretrain.fn(
        str(shards_dir),
        str(_local_path(training.config)),
        str(out),
        nproc=training.nproc,
        law=law,
        overrides=list(training.overrides),
    )


# --flow NAME -> (module, attribute) of the flow function to deploy
FLOWS: dict[str, tuple[str, str]] = {
    "curate": ("flows.deploy", "curate_job"),
    "end-to-end": ("flows.end_to_end", "end_to_end"),  # curate → train, once flows/ has it
    "pretrain": ("flows.deploy", "pretrain_job"),
}
CHAINABLE = ("pretrain",)  # --then: what may run on a completed curation


def resolve_flow(name: str) -> tuple[Any, str]:
    """The flow object for ``--flow NAME`` and its entrypoint ``package.module.function``.

    A module path, not ``flows/x.py:fn``: Prefect puts a file entrypoint's directory first on
    ``sys.path``, and there ``flows/curate.py`` would shadow the ``curate`` package."""
    if name not in FLOWS:
        raise SystemExit(f"unknown flow {name!r}; choose one of {', '.join(FLOWS)}")
    module_name, attr = FLOWS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise SystemExit(f"flow {name!r} is not available in this checkout: {e}") from None
    return getattr(module, attr), f"{module_name}.{attr}"


def deployment_parameters(config: str | None, overrides: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if config:
        path = Path(config).resolve()
        params["config"] = str(path)
    if overrides:
        params["overrides"] = list(overrides)
    return params


async def ensure_work_pool(name: str, pool_type: str = DEFAULT_POOL_TYPE) -> None:
    """Create the work pool ``name`` (``process`` type) unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))


def chain_trigger(curate_deployment_id: Any, curate_name: str) -> Any:
    """A deployment trigger for ``sluice-pretrain``: run it when a flow run of the curate
    deployment ``curate_deployment_id`` is Completed (``sluice.curate.completed``), on that
    run's shards (``shards`` and ``curate_run`` templated from the event; the other parameters
    are the pretrain deployment's)."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"sluice-pretrain after {curate_name}",
        description="train on the shards of every completed curation run of this deployment",
        expect={CURATE_COMPLETED},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.id": f"prefect.deployment.{curate_deployment_id}"},
        parameters={
            "shards": "{{ event.payload.shards }}",
            "curate_run": "{{ event.payload.flow_run_id }}",
        },
    )


def deploy_to_pool(
    flow_name: str,
    deployment: str,
    pool: str,
    cron: str | None,
    interval: float | None = None,
    parameters: dict[str, Any] | None = None,
    triggers: list[Any] | None = None,
) -> Any:
    """Register the deployment on work pool ``pool`` (code pulled from this checkout by the
    worker); returns the deployment id."""
    _, entrypoint = resolve_flow(flow_name)
    asyncio.run(ensure_work_pool(pool))
    remote = flow.from_source(source=str(REPO_ROOT), entrypoint=entrypoint)
    return remote.deploy(
        name=deployment,
        work_pool_name=pool,
        cron=cron,
        interval=interval,
        parameters=parameters or {},
        triggers=triggers,
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def _schedule(cron: str | None, interval: float | None) -> dict[str, Any]:
    return {"cron": cron} if cron else {"interval": interval} if interval else {}


def runner_deployment(
    flow_name: str,
    deployment: str,
    cron: str | None = None,
    interval: float | None = None,
    parameters: dict[str, Any] | None = None,
    triggers: list[Any] | None = None,
) -> Any:
    """The deployment ``flow.serve`` would register (to serve several in one process)."""
    fn, _ = resolve_flow(flow_name)
    return fn.to_deployment(
        name=deployment,
        parameters=parameters or {},
        triggers=triggers,
        entrypoint_type=EntrypointType.MODULE_PATH,
        **_schedule(cron, interval),
    )


def serve(
    flow_name: str,
    deployment: str,
    cron: str | None,
    interval: float | None = None,
    parameters: dict[str, Any] | None = None,
    limit: int | None = 1,
) -> None:
    """Register the deployment and run its scheduled runs here until interrupted."""
    fn, _ = resolve_flow(flow_name)
    fn.serve(
        name=deployment,
        parameters=parameters or {},
        limit=limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
        **_schedule(cron, interval),
    )


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``sluice deploy`` arguments (on ``p`` when given: a subparser of the sluice CLI)."""
    p = p or argparse.ArgumentParser(prog="sluice deploy", description=__doc__.split("\n")[0])
    when = p.add_mutually_exclusive_group()
    when.add_argument("--cron", help='cron schedule, e.g. "0 3 * * *" (03:00 every day)')
    when.add_argument("--interval", type=float, help="schedule every N seconds instead")
    p.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, applied at every run",
    )
    p.add_argument("--flow", choices=sorted(FLOWS), default="curate")
    p.add_argument("--name", help="deployment name (default: sluice-<flow>)")
    p.add_argument(
        "--then",
        choices=CHAINABLE,
        help="with --flow curate: also deploy pretrain, triggered by every completed curation",
    )
    train = p.add_argument_group("pretrain (--flow pretrain, or --then pretrain)")
    train.add_argument("--train-config", help=f"training YAML (default: {DEFAULT_TRAIN_CONFIG})")
    train.add_argument(
        "--train-set", action="append", default=[], metavar="KEY=VALUE", help="training override"
    )
    train.add_argument("--nproc", type=int, default=1, help="training processes (default 1)")
    train.add_argument(
        "--predict", action="store_true", help="predict the final loss from a fitted law first"
    )
    train.add_argument("--law", default="", help="fit.json (default: <run dir>/sweep/fit.json)")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--serve", action="store_true", help="run scheduled runs in this process (default)"
    )
    how.add_argument(
        "--work-pool",
        metavar="NAME",
        help="deploy to a process work pool; run `prefect worker start --pool NAME`",
    )
    p.add_argument("--api-url", help="Prefect API (default: $PREFECT_API_URL or a local server)")
    p.set_defaults(fn=main_args)
    return p


def check_config(config: str | None, overrides: Sequence[str]) -> None:
    """Load the config now, so a typo fails at deploy time rather than at the scheduled run."""
    from curate.config import ConfigError, load_config

    try:
        load_config(Path(config or DEFAULT_CONFIG), list(overrides))
    except ConfigError as e:
        raise SystemExit(f"config error:\n{e}") from None


def training_settings(args: argparse.Namespace) -> TrainingSettings:
    """The pretrain deployment's ``training`` parameter from the CLI; the training config is
    loaded now, so a typo fails at deploy time."""
    from pydantic import ValidationError

    from train.trainer import TrainConfig

    config = str(Path(args.train_config).resolve()) if args.train_config else DEFAULT_TRAIN_CONFIG
    try:
        settings = TrainingSettings(
            config=config, overrides=list(args.train_set), nproc=args.nproc,
            predict=args.predict or bool(args.law),
            law=str(Path(args.law).resolve()) if args.law else "",
        )  # fmt: skip
        TrainConfig.from_yaml(_local_path(settings.config), settings.overrides)
    except (ValidationError, ValueError, OSError) as e:
        raise SystemExit(f"training config error:\n{e}") from None
    return settings


def main_args(args: argparse.Namespace) -> int:
    from flows.server import ensure_api, healthy

    resolve_flow(args.flow)  # fail before touching the server
    if args.then and args.flow != "curate":
        raise SystemExit("--then chains a deployment to curation: use it with --flow curate")
    if args.flow != "pretrain" and not (args.cron or args.interval):
        raise SystemExit(f"--flow {args.flow} needs a schedule: --cron or --interval")
    pretraining = args.flow == "pretrain" or args.then == "pretrain"
    training = training_settings(args) if pretraining else None
    if args.flow != "pretrain":
        check_config(args.config, args.set)
    if args.api_url and not healthy(args.api_url):
        raise SystemExit(f"no Prefect API answers at {args.api_url}")
    url = ensure_api(args.api_url)
    name = args.name or f"sluice-{args.flow}"
    if args.flow == "pretrain":
        params: dict[str, Any] = {"training": training.model_dump()} if training else {}
    else:
        params = deployment_parameters(args.config, args.set)
    schedule = (
        f"cron {args.cron!r}" if args.cron else f"every {args.interval:g} s"
        if args.interval else "no schedule (runs from the UI, API or a trigger)"
    )  # fmt: skip
    chained = {"training": training.model_dump()} if args.then and training else None
    then_name = args.name or "sluice-pretrain"
    if args.work_pool:
        dep_id = deploy_to_pool(args.flow, name, args.work_pool, args.cron, args.interval, params)
        print(f"deployment {name} ({dep_id}) on work pool {args.work_pool}, {schedule}")
        if chained is not None:
            trigger = chain_trigger(dep_id, name)
            then_id = deploy_to_pool(args.then, then_name, args.work_pool, None, None, chained,
                                     [trigger])  # fmt: skip
            print(f"deployment {then_name} ({then_id}), triggered when {name} completes")
        print(f"start a worker: PREFECT_API_URL={url} prefect worker start --pool {args.work_pool}")
        return 0
    if chained is not None:
        from prefect import serve as serve_all

        first = runner_deployment(args.flow, name, args.cron, args.interval, params)
        trigger = chain_trigger(first.apply(), name)
        then = runner_deployment(args.then, then_name, parameters=chained, triggers=[trigger])
        print(f"serving deployments {name} ({schedule}) and {then_name} (triggered when "
              f"{name} completes), API {url} (Ctrl-C stops)", flush=True)  # fmt: skip
        serve_all(first, then, limit=2)  # a training run may start while curation runs
        return 0
    print(f"serving deployment {name}, {schedule}, API {url} (Ctrl-C stops)", flush=True)
    serve(args.flow, name, args.cron, args.interval, params)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return main_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
