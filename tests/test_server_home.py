"""The Prefect server of a Sluice home (issue 20): a foreign server on the port is an error
naming its process, and ``sluice server --stop`` stops only what this home started."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time

import pytest

from flows import server
from flows.cli import main

FOREIGN = textwrap.dedent(
    """
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"true")
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


@pytest.fixture
def foreign(tmp_path):
    """A server of someone else on a free port, answering Prefect's health check."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", FOREIGN, str(port)])
    try:
        deadline = time.monotonic() + 30
        while not server.healthy(server.api_url(port=port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        yield port, proc
    finally:
        proc.kill()
        proc.wait()


def test_stop_leaves_a_foreign_server_running(foreign, tmp_path, monkeypatch, capsys):
    port, proc = foreign
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    assert main(["server", "--stop"]) == 0
    assert "no background server" in capsys.readouterr().out
    assert proc.poll() is None and server.healthy(server.api_url(port=port))


def test_a_foreign_server_on_the_port_is_an_error_naming_it(foreign, tmp_path, monkeypatch, capsys):
    port, proc = foreign
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as e:
        main(["server", "--background", "--port", str(port)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"port {port} is taken by pid {proc.pid}" in err and f"--port {port + 1}" in err
    assert not server.pid_file().exists()  # nothing recorded as this home's
    assert proc.poll() is None


def test_the_home_holds_prefect_home_and_pid_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "h"))
    assert server.prefect_home() == tmp_path / "h" / "prefect"
    assert server.pid_file() == tmp_path / "h" / "prefect" / "server.pid"
    assert server._env("http://x/api")["PREFECT_HOME"] == str(tmp_path / "h" / "prefect")
    monkeypatch.delenv("SLUICE_HOME")
    assert server.state_dir() == server.CHECKOUT / ".sluice"  # per checkout by default
