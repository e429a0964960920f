"""Runtime set-up shared by the flows and the CLI: telemetry off, Ray start options.

Import this before prefect or ray: it turns their telemetry off in this process and in every
process started from it (Ray workers, the Prefect server).

A local Ray (no cluster address) is private to the run: every server it starts (GCS, raylet,
workers, dashboard and runtime-env agents) listens on 127.0.0.1 only, and none outlives the
run. Ray ignores ``_node_ip_address="127.0.0.1"`` on Linux (it "resolves" loopback to the
machine's address) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (``LOCAL_RAY_ENV``, set by
:func:`ray_init_kwargs` for local runs only); the dashboard is off. Ray stops its processes on
``ray.shutdown``, and the GCS and raylet die with a killed driver, but its agents outlive a
``kill -9`` of the driver by minutes: :func:`reap_on_exit` starts a small watchdog
(``python -m flows.runtime reap``) that stops every process of the run's Ray session as soon as
the driver is gone, however it ended, and removes the session's temp dir.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TELEMETRY_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
LOCAL_HOST = "127.0.0.1"
# Ray resolves a loopback node address to the machine's own unless clusters are "disabled"
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
RAY_TEMP_PREFIX = "sluice-ray-"


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


def flow_run_namer(name_of: Callable[[dict[str, Any]], str], fallback: str) -> Callable[[], str]:
    """A Prefect ``flow_run_name``: the Sluice run's name, ``name_of`` the flow's parameters, so
    the UI lists a run as the CLI names it (not ``bipedal-swan``); ``fallback`` when the
    parameters name none (a bad config fails in the flow itself, with its own message)."""

    def name() -> str:
        from prefect.runtime import flow_run

        try:
            return name_of(flow_run.parameters) or fallback
        except Exception:  # noqa: BLE001 - naming must never be what fails a run
            return fallback

    return name


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
    """``ray.init`` keyword arguments: a small local Ray in its own temp dir, bound to
    127.0.0.1 and reaped when this process ends (module doc), or a cluster."""
    ensure_ray_bootstrap_config()
    loopback_only(address is None)
    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": worker_env()},
        "log_to_driver": False,
        "namespace": "sluice",
    }
    if address:
        kwargs["address"] = address
        return kwargs
    # a short path: Ray's unix sockets live under it (the limit is ~107 bytes)
    temp_dir = temp_dir or tempfile.mkdtemp(prefix=RAY_TEMP_PREFIX, dir="/tmp")
    kwargs.update(
        num_cpus=num_cpus or os.cpu_count() or 1,
        object_store_memory=object_store_memory,
        include_dashboard=False,
        _node_ip_address=LOCAL_HOST,
        _temp_dir=temp_dir,
    )
    reap_on_exit(temp_dir)
    return {k: v for k, v in kwargs.items() if v is not None}


def loopback_only(local: bool) -> None:
    """Make a local Ray keep 127.0.0.1 as its node address (module doc); a cluster run gets
    Ray's default back. Works whether or not ray is imported yet."""
    for key, value in LOCAL_RAY_ENV.items():
        if local:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # read once at import: set the imported value too
        constants.ENABLE_RAY_CLUSTER = not local and not constants.IS_WINDOWS_OR_OSX


def reap_on_exit(temp_dir: str) -> subprocess.Popen:
    """Start the watchdog that stops the local Ray of ``temp_dir`` when this process ends."""
    read_end, write_end = os.pipe()  # the write end dies with this process: EOF = gone
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.runtime", "reap", str(os.getpid()), str(read_end), temp_dir],
        pass_fds=(read_end,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the driver's process group: a group kill spares it
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    os.close(read_end)
    _reaper_pipes.append(write_end)  # held (non-inheritable) until this process exits
    return proc


_reaper_pipes: list[int] = []


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process (from /proc/<pid>/stat)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path("/proc", entry, "stat").read_text().rsplit(")", 1)[1].split()
                out[int(entry)] = (int(fields[1]), fields[19])
    return out


def _descendants(roots: set[int], procs: dict[int, tuple[int, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _uses(pid: int, marker: str) -> bool:
    """True when the process names ``marker`` on its command line or holds a file below it
    open (Ray's processes log into the session dir; agents rename their command line)."""
    with contextlib.suppress(OSError):
        if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            return True
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(marker):
                    return True
    return False


def _session_pids(
    temp_dir: str, known: dict[int, str] | None = None, spare: int | None = None
) -> dict[int, str]:
    """pid -> start time of the processes of the Ray session under ``temp_dir``: those using it
    (:func:`_uses`), the ``known`` ones still alive (same start time), and all below them;
    never this process, nor ``spare`` (the driver: it holds the session's logs open too) and
    what only it started."""
    procs = _processes()
    marker = temp_dir.rstrip("/") + "/"
    roots = {p for p in procs if p not in (os.getpid(), spare) and _uses(p, marker)}
    roots |= {p for p, start in (known or {}).items() if procs.get(p, (0, ""))[1] == start}
    roots -= {os.getpid(), spare}
    return {p: procs[p][1] for p in _descendants(roots, procs) if p in procs}


def stop_session(
    temp_dir: str,
    known: dict[int, str] | None = None,
    spare: int | None = None,
    grace_s: float = 2.0,
) -> int:
    """SIGTERM every process of the Ray session under ``temp_dir`` (:func:`_session_pids`),
    SIGKILL what is left after ``grace_s``; removes ``temp_dir`` when it is one of ours.
    Returns the count."""
    pids = set(_session_pids(temp_dir, known, spare)) - {os.getpid(), spare}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while sig == signal.SIGTERM and time.monotonic() < deadline:
            if not any(Path(f"/proc/{pid}").exists() for pid in pids):
                break
            time.sleep(0.05)
    if Path(temp_dir).name.startswith(RAY_TEMP_PREFIX):
        shutil.rmtree(temp_dir, ignore_errors=True)
    return len(pids)


def _reap(driver: int, read_end: int, temp_dir: str) -> None:
    """Watchdog loop: wait for the driver to end (its pipe closes, or the pid is gone), or for
    the run to remove its temp dir (a normal end); then stop what is left of the session."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the terminal is the driver's
    known: dict[int, str] = {}  # the session's processes seen so far (pid -> start time)
    while True:
        if select.select([read_end], [], [], 1.0)[0] and not os.read(read_end, 1):
            break  # EOF: the driver exited, however
        if not Path(f"/proc/{driver}").exists() or not Path(temp_dir).exists():
            break
        procs = _processes()  # the session's processes below the driver (not its others)
        marker = temp_dir.rstrip("/") + "/"
        roots = {p for p in _descendants({driver}, procs) - {driver} if _uses(p, marker)}
        known.update({p: procs[p][1] for p in _descendants(roots, procs) if p in procs})
    known.pop(os.getpid(), None)
    stop_session(temp_dir, known, spare=driver)


if __name__ == "__main__" and sys.argv[1:2] == ["reap"]:
    _reap(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
