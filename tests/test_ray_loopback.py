"""Issue 16.19: a local ``sluice run`` starts a Ray that listens on 127.0.0.1 only, and every
process it started is gone within seconds of the run's end, a ``kill -9`` of the driver included.

One slow test (a small flow on a real Prefect server): the run's process tree is watched through
the kernel's socket tables (``tests.netaudit.listeners``, what ``ss -ltnp`` shows) every 0.2 s.
Measured before the fix: GCS, raylet, workers and the driver listened on ``*``, the agents on
0.0.0.0 and the machine's address, and after ``kill -9`` of the driver the dashboard and
runtime-env agents were still up 60 s later; after: every listener on 127.0.0.1, nothing left
2-3 s after a ``kill -9`` (the reaper of ``flows.runtime``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netaudit import Listener, _descendants, alive, listeners

ROOT = Path(__file__).resolve().parent.parent
GONE_WITHIN_S = 5.0


def _watch(proc: subprocess.Popen, until: float, stop_when=None):  # noqa: ANN001, ANN202
    """Poll the listeners and processes of ``proc``'s tree until it exits, ``stop_when(seen)``
    holds, or ``until``; returns (listeners seen, pids seen)."""
    seen: set[Listener] = set()
    pids: set[int] = set()
    while proc.poll() is None and time.monotonic() < until:
        pids |= _descendants(proc.pid) - {proc.pid}
        seen |= set(listeners(proc.pid))
        if stop_when is not None and stop_when(seen):
            break
        time.sleep(0.2)
    return seen, pids


def _wait_gone(pids: set[int]) -> float:
    start = time.monotonic()
    while alive(pids) and time.monotonic() - start < GONE_WITHIN_S + 5:
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_local_run_listens_on_loopback_only_and_leaves_no_process(tmp_path):
    from tests.prefect_server import local_prefect_server
    from tests.run_sample import small_flow_config

    small_flow_config(tmp_path, "loopback", ["toxicity"])
    config = tmp_path / "loopback.yaml"
    with local_prefect_server(tmp_path) as server:

        def run(name: str) -> subprocess.Popen:
            cmd = [sys.executable, "-m", "flows.cli", "run", "--config", str(config)]
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the child writes it
            return subprocess.Popen(
                [*cmd, "--run-name", name, "--set", f"run_dir={tmp_path / 'runs' / name}"],
                cwd=ROOT,
                env=server.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        # a whole run: every listener on loopback; nothing left afterwards
        proc = run("whole")
        seen, pids = _watch(proc, time.monotonic() + 600)
        proc.wait(timeout=60)
        log = (tmp_path / "whole.log").read_text(errors="replace")[-3000:]
        assert proc.returncode == 0, log
        assert any("raylet" in s.cmd for s in seen), seen  # Ray did run and listen
        assert all(s.loopback for s in seen), "\n".join(map(str, seen))
        took = _wait_gone(pids)
        assert not alive(pids), [Path(f"/proc/{p}/cmdline").read_bytes() for p in alive(pids)]
        assert took <= GONE_WITHIN_S

        # kill -9 of the driver once Ray listens: its processes go within seconds
        proc = run("killed")
        seen, pids = _watch(
            proc,
            time.monotonic() + 300,
            stop_when=lambda s: any("ray::IDLE" in x.cmd or "Agent" in x.cmd for x in s),
        )
        assert proc.poll() is None and pids, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(1)
        pids |= _descendants(proc.pid) - {proc.pid}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        took = _wait_gone(pids)
        left = [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in alive(pids)]
        assert not left and took <= GONE_WITHIN_S, (took, left)
        assert all(s.loopback for s in seen), "\n".join(map(str, seen))
        print(f"after kill -9 of the driver, its {len(pids)} processes were gone in {took:.1f} s")
