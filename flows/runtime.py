"""Runtime set-up shared by the flows and the CLI: telemetry off, Ray start options.

Import this before prefect or ray: it turns their telemetry off in this process and in every
process started from it (Ray workers, the Prefect server).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

TELEMETRY_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
LOCAL_HOST = "127.0.0.1"


def quiet_telemetry() -> None:
    """Set the telemetry-off variables in this process (kept when already set)."""
    for key, value in TELEMETRY_ENV.items():
        os.environ.setdefault(key, value)


quiet_telemetry()


def run_log(message: str, level: str = "info") -> None:
    """A Prefect log line inside a flow or task run; a printed line outside (the in-process
    chains of ``sluice demo --local``)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        getattr(get_run_logger(), level)(message)
    except MissingContextError:
        print(message, flush=True)


def in_prefect_run() -> bool:
    """True inside a Prefect flow or task run (where artifacts can be created)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def as_task(task: Any, *args: Any) -> Any:
    """How a chain calls a step inside a flow: as the Prefect task."""
    return task(*args)


def in_process(task: Any, *args: Any) -> Any:
    """How a chain calls a step outside Prefect: the task's plain function."""
    return task.fn(*args)


def ensure_ray_bootstrap_config(home: Path | None = None) -> Path:
    """Write ``~/ray_bootstrap_config.yaml`` (local provider) if absent: without it Ray probes
    a cloud metadata address at start."""
    path = (home or Path.home()) / "ray_bootstrap_config.yaml"
    if not path.exists():
        path.write_text("provider:\n  type: local\n")
    return path


def current_api_url() -> str | None:
    """The Prefect API URL of this process's settings (None: ephemeral mode)."""
    import prefect.settings

    return prefect.settings.get_current_settings().api.url


def worker_env() -> dict[str, str]:
    """Variables every Ray worker needs: telemetry off and the Prefect API of the flow."""
    env = dict(TELEMETRY_ENV)
    url = current_api_url()
    if url:
        env["PREFECT_API_URL"] = url
    return env


def ray_init_kwargs(
    address: str | None,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    temp_dir: str | None = None,
) -> dict[str, Any]:
    """``ray.init`` keyword arguments: a small local Ray in its own temp dir, or a cluster."""
    ensure_ray_bootstrap_config()
    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": worker_env()},
        "log_to_driver": False,
        "namespace": "sluice",
    }
    if address:
        kwargs["address"] = address
        return kwargs
    kwargs.update(
        num_cpus=num_cpus or os.cpu_count() or 1,
        object_store_memory=object_store_memory,
        include_dashboard=False,
        _node_ip_address=LOCAL_HOST,
        # a short path: Ray's unix sockets live under it (the limit is ~107 bytes)
        _temp_dir=temp_dir or tempfile.mkdtemp(prefix="sluice-ray-", dir="/tmp"),
    )
    return {k: v for k, v in kwargs.items() if v is not None}
