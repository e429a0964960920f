"""Crash and resume (issue 9.3): SIGKILL the driver in the middle of a stage, run again, and get
the same bytes (shards, parts, stats) as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_runner import DEFAULT, FAST, data_files

ROOT = Path(__file__).resolve().parents[1]
KILL_STAGE = "heuristics"  # a per-part stage in the middle of the default pipeline


def _command(run: Path) -> list[str]:
    sets = [a for s in [*FAST, f"run_dir={run}"] for a in ("--set", s)]
    return [sys.executable, "-m", "flows.cli", "run", "--local", "--config", str(DEFAULT), *sets]


def _run(run: Path) -> None:
    out = subprocess.run(_command(run), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


def _n_parts(run: Path) -> int:
    import json

    return len(json.loads((run / "parts.json").read_text())["parts"])


@pytest.mark.slow
def test_sigkill_of_the_driver_mid_stage_then_rerun_gives_identical_bytes(tmp_path):
    reference = tmp_path / "reference"
    _run(reference)
    n_parts = _n_parts(reference)
    assert n_parts >= 3, "the kill must land between parts of a stage"

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _command(run), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    stage_dir = run / KILL_STAGE
    deadline = time.monotonic() + 600
    done_at_kill = 0
    while time.monotonic() < deadline and proc.poll() is None:
        done_at_kill = len(list(stage_dir.glob("part-*.done.json")))
        if done_at_kill >= 1:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and anything it started
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done_after = len(list(stage_dir.glob("part-*.done.json")))
    assert 1 <= done_after < n_parts, f"killed outside {KILL_STAGE}: {done_after}/{n_parts} done"
    assert not (run / "shards" / "manifest.json").exists()

    _run(run)  # resume: finishes the rest

    expected, got = data_files(reference), data_files(run)
    assert sorted(got) == sorted(expected)
    different = [name for name in expected if got[name] != expected[name]]
    assert not different, f"{len(different)} files differ after resume, e.g. {different[:5]}"
    assert "stats.json" in got and "shards/manifest.json" in got
    print(f"killed with {done_at_kill}/{n_parts} {KILL_STAGE} parts done; {len(got)} files equal")
