"""A real Prefect server on 127.0.0.1 for slow tests: its own port, home (SQLite) and log.

``local_prefect_server(tmp)`` starts ``prefect server start --host 127.0.0.1 --port P`` in its
own process group, waits for the health check, points this process at it (PREFECT_API_URL in
the environment and in Prefect's settings) and stops the whole group afterwards. The
scheduler loop runs every few seconds so that a new deployment's first run is planned at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flows.runtime import TELEMETRY_ENV
from flows.server import wait_healthy

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str  # the API, http://127.0.0.1:P/api
    ui: str  # http://127.0.0.1:P
    home: Path
    log: Path
    env: dict[str, str]  # for child processes that talk to this server

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def child_env(home: Path, url: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        **TELEMETRY_ENV,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "3",
        "PREFECT_LOGGING_LEVEL": "INFO",
        # subprocesses import this checkout (the venv's editable install may be another one)
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])]
        ),
    }
    if url:
        env["PREFECT_API_URL"] = url
    else:
        env.pop("PREFECT_API_URL", None)
    return env


def stop_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGINT then SIGTERM then SIGKILL to the process group started for ``proc``."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    # children that outlived the leader (uvicorn workers, flow-run subprocesses)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _drain_prefect_services(timeout: float = 15.0) -> None:
    """Send what this process's Prefect services (events, logs) still hold while the server is
    up: left for interpreter exit, they would warn into closed streams."""
    from prefect._internal.concurrency.services import QueueService

    with contextlib.suppress(Exception):
        QueueService.drain_all(timeout=timeout, at_exit=False)


@contextlib.contextmanager
def local_prefect_server(tmp: Path) -> Iterator[Server]:
    import prefect.settings as ps

    home = tmp / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = tmp / "prefect-server.log"
    env = child_env(home)
    env["PREFECT_UI_API_URL"] = url
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    try:
        wait_healthy(url, timeout=180, proc=proc)
        os.environ["PREFECT_API_URL"] = url
        # no log shipping from this process: its queue would outlive the server it points at
        quiet = {ps.PREFECT_API_URL: url, ps.PREFECT_LOGGING_TO_API_ENABLED: False}
        with ps.temporary_settings(updates=quiet):
            yield Server(
                url=url, ui=f"http://127.0.0.1:{port}", home=home, log=log, env=child_env(home, url)
            )
    finally:
        _drain_prefect_services()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop_group(proc)
