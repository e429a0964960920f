"""``sluice deploy``: the curation flow as a Prefect deployment on a cron schedule.

Two ways to run the scheduled flow runs:

- ``--serve`` (default): ``flow.serve`` registers the deployment and runs its scheduled runs in
  this process (foreground, until Ctrl-C); nothing else to start.
- ``--work-pool NAME``: ``flow.from_source(<repo>, entrypoint).deploy`` registers the deployment
  on a ``process`` work pool (created if missing) and returns; a worker runs the flow runs:
  ``prefect worker start --pool NAME`` (with the same ``PREFECT_API_URL``).

The deployed flow is ``sluice-curate`` (below): it loads the YAML config at run time (so an
edited config applies to the next scheduled run) and runs ``flows.curate.curate_flow`` on Ray as
a subflow. A rerun of the same config resumes the same run directory: parts whose input and
config did not change are skipped, changed inputs are recomputed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.deployments.runner import EntrypointType

from flows import runtime  # noqa: F401 - telemetry off before prefect and ray load

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "default.yaml")
DEFAULT_POOL_TYPE = "process"


@flow(name="sluice-curate", log_prints=True)
def curate_job(
    config: str = DEFAULT_CONFIG,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Curate with ``config`` (path, relative to the repository if not absolute) and
    ``key=value`` overrides; publish the run report as artifacts; returns stats.json."""
    from curate.config import load_config
    from flows.curate import run_curate

    path = Path(config)
    cfg = load_config(path if path.is_absolute() else REPO_ROOT / path, list(overrides or []))
    return run_curate(cfg)  # writes report.html and publishes it as artifacts


# --flow NAME -> (module, attribute) of the flow function to deploy
FLOWS: dict[str, tuple[str, str]] = {
    "curate": ("flows.deploy", "curate_job"),
    "end-to-end": ("flows.end_to_end", "end_to_end"),  # curate → train, once flows/ has it
}


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


def deploy_to_pool(
    flow_name: str,
    deployment: str,
    pool: str,
    cron: str | None,
    interval: float | None = None,
    parameters: dict[str, Any] | None = None,
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
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
        entrypoint_type=EntrypointType.MODULE_PATH,
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
    kwargs: dict[str, Any] = {"cron": cron} if cron else {"interval": interval}
    fn.serve(
        name=deployment,
        parameters=parameters or {},
        limit=limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
        **kwargs,
    )


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``sluice deploy`` arguments (on ``p`` when given: a subparser of the sluice CLI)."""
    p = p or argparse.ArgumentParser(prog="sluice deploy", description=__doc__.split("\n")[0])
    when = p.add_mutually_exclusive_group(required=True)
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


def main_args(args: argparse.Namespace) -> int:
    from flows.server import ensure_api, healthy

    resolve_flow(args.flow)  # fail before touching the server
    check_config(args.config, args.set)
    if args.api_url and not healthy(args.api_url):
        raise SystemExit(f"no Prefect API answers at {args.api_url}")
    url = ensure_api(args.api_url)
    name = args.name or f"sluice-{args.flow}"
    params = deployment_parameters(args.config, args.set)
    schedule = f"cron {args.cron!r}" if args.cron else f"every {args.interval:g} s"
    if args.work_pool:
        dep_id = deploy_to_pool(args.flow, name, args.work_pool, args.cron, args.interval, params)
        print(
            f"deployment {name} ({dep_id}) on work pool {args.work_pool}, {schedule}\n"
            f"start a worker: PREFECT_API_URL={url} prefect worker start --pool {args.work_pool}"
        )
        return 0
    print(f"serving deployment {name}, {schedule}, API {url} (Ctrl-C stops)", flush=True)
    serve(args.flow, name, args.cron, args.interval, params)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return main_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
