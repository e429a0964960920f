"""``sluice server``: a Prefect server on 127.0.0.1 (foreground, or background with a pid file).

Flows run against a real server (``PREFECT_API_URL``): in ephemeral mode every Ray worker
would start its own server on the same SQLite file, and they lock each other out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows.runtime import LOCAL_HOST, TELEMETRY_ENV, quiet_telemetry

DEFAULT_PORT = 4200


def state_dir() -> Path:
    """Where the background server keeps its pid file and log (``$SLUICE_HOME`` or ~/.sluice)."""
    path = Path(os.environ.get("SLUICE_HOME", Path.home() / ".sluice"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def api_url(host: str = LOCAL_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}/api"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when the Prefect API at ``url`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def wait_healthy(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode}")
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect server at {url} did not answer within {timeout:.0f} s")


def _command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


def _env(url: str) -> dict[str, str]:
    env = {**os.environ, **TELEMETRY_ENV, "PREFECT_UI_API_URL": url}
    env.pop("PREFECT_API_URL", None)  # the server itself must not point at another API
    return env


def run_foreground(host: str = LOCAL_HOST, port: int = DEFAULT_PORT) -> int:
    """Run the server in this terminal until Ctrl-C."""
    quiet_telemetry()
    url = api_url(host, port)
    print(f"Prefect server: UI http://{host}:{port}  API {url}  (export PREFECT_API_URL={url})")
    return subprocess.call(_command(host, port), env=_env(url))


def start_background(
    host: str = LOCAL_HOST, port: int = DEFAULT_PORT, timeout: float = 120.0
) -> str:
    """Start the server detached (pid file + log under :func:`state_dir`), wait until healthy;
    returns the API URL. A server already answering there is reused."""
    quiet_telemetry()
    url = api_url(host, port)
    if healthy(url):
        return url
    log = open(state_dir() / "server.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        _command(host, port),
        env=_env(url),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (state_dir() / "server.pid").write_text(f"{proc.pid}\n")
    try:
        wait_healthy(url, timeout, proc)
    except (RuntimeError, TimeoutError) as e:
        raise RuntimeError(f"{e}; see {state_dir() / 'server.log'}") from None
    return url


def stop_background() -> bool:
    """Stop the server started by :func:`start_background` (by its pid file)."""
    pid_file = state_dir() / "server.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    pid_file.unlink(missing_ok=True)
    return True


def ensure_api(url: str | None = None, start: bool = True) -> str:
    """A reachable Prefect API: ``url``, else $PREFECT_API_URL, else a background server on
    127.0.0.1:4200 (started when ``start``). Sets PREFECT_API_URL for this process's children."""
    candidate = url or os.environ.get("PREFECT_API_URL")
    if candidate and healthy(candidate):
        os.environ["PREFECT_API_URL"] = candidate
        return candidate
    if not start:
        raise RuntimeError(
            f"no Prefect API answers at {candidate or api_url()}: run `sluice server` "
            "(or `sluice server --background`), or `sluice run --local` to run without Prefect"
        )
    found = start_background()
    os.environ["PREFECT_API_URL"] = found
    return found
