"""``sluice server``: this checkout's own Prefect server on 127.0.0.1 (foreground, or background).

Flows run against a real server (``PREFECT_API_URL``): in ephemeral mode every Ray worker
would start its own server on the same SQLite file, and they lock each other out.

The server belongs to a Sluice home: ``$SLUICE_HOME``, default ``<checkout>/.sluice``. Its
``PREFECT_HOME`` is ``<home>/prefect`` (its own ``prefect.db``), and a background server's pid is
in ``<home>/prefect/server.pid`` — where Prefect's own ``prefect server start --background``
writes it, so ``PREFECT_HOME=<home>/prefect prefect server stop`` stops it too. We start the
process ourselves rather than through ``--background`` because Prefect's leaves the server's
output on a pipe nobody reads; ours goes to ``<home>/server.log``. A server of another home
on the port is an error naming its process and home; ``--stop`` stops only this home's.
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
CHECKOUT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    """The port is taken by a server (or process) this Sluice home did not start."""


def state_dir() -> Path:
    """This Sluice home (``$SLUICE_HOME``, default ``<checkout>/.sluice``): the server's
    ``PREFECT_HOME``, pid file and log."""
    path = Path(os.environ.get("SLUICE_HOME") or CHECKOUT / ".sluice")
    path.mkdir(parents=True, exist_ok=True)
    return path


def prefect_home() -> Path:
    """The ``PREFECT_HOME`` of this home's server (its own database)."""
    return state_dir() / "prefect"


def pid_file() -> Path:
    """Where a background server's pid is (Prefect's own place: ``PREFECT_HOME/server.pid``)."""
    return prefect_home() / "server.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def own_pid() -> int | None:
    """The pid of this home's background server when it is running (a stale file is removed)."""
    try:
        pid = int(pid_file().read_text().strip())
    except (OSError, ValueError):
        return None
    if _alive(pid):
        return pid
    pid_file().unlink(missing_ok=True)
    return None


def listener(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` (Linux /proc); None if unknown."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                    inodes.add(cols[9])
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return int(proc.name)
    return None


def _session(pid: int) -> int | None:
    """The session id of ``pid`` (our background server leads its own session)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[4])


def describe_process(pid: int) -> str:
    """``pid N (command ...; PREFECT_HOME ...)`` as far as /proc tells."""
    parts = [f"pid {pid}"]
    with contextlib.suppress(OSError):
        cmd = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
        parts.append(" ".join(cmd.split())[:120])
    with contextlib.suppress(OSError):
        env = dict(
            item.split("=", 1)
            for item in Path(f"/proc/{pid}/environ")
            .read_bytes()
            .decode(errors="replace")
            .split("\0")
            if "=" in item
        )
        if "PREFECT_HOME" in env:
            parts.append(f"PREFECT_HOME {env['PREFECT_HOME']}")
    return "; ".join(parts)


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_port(host: str, port: int) -> bool:
    """True when this home's server holds ``port``; False when the port is free; ServerError
    (whose process it is, how to pick another port) when another process holds it."""
    mine = own_pid()
    holder = listener(port)
    ours = holder is None or holder == mine or _session(holder) == mine  # a child of it
    if mine is not None and ours and healthy(api_url(host, port)):
        return True
    if holder is None and not _port_in_use(host, port):
        return False
    who = describe_process(holder) if holder is not None else "another process"
    raise ServerError(
        f"port {port} is taken by {who}, not by this checkout's server (SLUICE_HOME "
        f"{state_dir()}): pick another port, e.g. `sluice server --background --port "
        f"{port + 1}` and `--set prefect.api_url={api_url(host, port + 1)}` (or "
        "PREFECT_API_URL), or stop that server from its own checkout"
    )


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
    env = {
        **os.environ,
        **TELEMETRY_ENV,
        "PREFECT_UI_API_URL": url,
        "PREFECT_HOME": str(prefect_home()),
    }
    env.pop("PREFECT_API_URL", None)  # the server itself must not point at another API
    return env


def run_foreground(host: str = LOCAL_HOST, port: int = DEFAULT_PORT) -> int:
    """Run this home's server in this terminal until Ctrl-C."""
    quiet_telemetry()
    url = api_url(host, port)
    if check_port(host, port):
        print(f"this checkout's server already runs in the background: {url}")
        return 0
    print(f"Prefect server: UI http://{host}:{port}  API {url}  (export PREFECT_API_URL={url})")
    return subprocess.call(_command(host, port), env=_env(url))


def start_background(
    host: str = LOCAL_HOST, port: int = DEFAULT_PORT, timeout: float = 120.0
) -> str:
    """Start this home's server detached (pid file + log, see the module doc), wait until
    healthy; returns the API URL. This home's server already there is reused; another
    process on the port is a ServerError."""
    return start_background_owned(host, port, timeout)[0]


def start_background_owned(
    host: str = LOCAL_HOST, port: int = DEFAULT_PORT, timeout: float = 120.0
) -> tuple[str, bool]:
    """:func:`start_background`, and whether it started the server (False: reused)."""
    quiet_telemetry()
    url = api_url(host, port)
    if check_port(host, port):
        return url, False
    prefect_home().mkdir(parents=True, exist_ok=True)
    log = open(state_dir() / "server.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        _command(host, port),
        env=_env(url),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file().write_text(f"{proc.pid}\n")
    try:
        wait_healthy(url, timeout, proc)
    except (RuntimeError, TimeoutError) as e:
        raise RuntimeError(f"{e}; see {state_dir() / 'server.log'}") from None
    return url, True


def stop_background() -> bool:
    """Stop this home's background server (by its pid file; never another home's)."""
    pid = own_pid()
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    pid_file().unlink(missing_ok=True)
    return True


def ensure_api(url: str | None = None, start: bool = True) -> str:
    """A reachable Prefect API: ``url``, else $PREFECT_API_URL, else this home's background
    server on 127.0.0.1:4200 (started when ``start``). Sets PREFECT_API_URL for this process's
    children."""
    return ensure_api_started(url, start)[0]


def ensure_api_started(url: str | None = None, start: bool = True) -> tuple[str, bool]:
    """:func:`ensure_api`, and whether it started a server."""
    candidate = url or os.environ.get("PREFECT_API_URL")
    if candidate and healthy(candidate):
        os.environ["PREFECT_API_URL"] = candidate
        return candidate, False
    if not start:
        raise RuntimeError(
            f"no Prefect API answers at {candidate or api_url()}: run `sluice server` "
            "(or `sluice server --background`), or `sluice run --local` to run without Prefect"
        )
    found, started = start_background_owned()
    os.environ["PREFECT_API_URL"] = found
    return found, started
