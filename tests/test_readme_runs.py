"""README.md's commands, executed (issue 20): every ``sluice`` command of its bash blocks either
runs here as written — in a scratch directory with ``configs/``, ``data/``, ``curate/`` linked, so
``runs/...`` lands there — with the small settings of ``RUN_WITH`` appended (a free port, fewer
tokens, a mini sweep, few steps: later options override earlier ones), or is listed in
``NOT_RUN`` with why and the test that covers it. A README command in neither fails the test,
so a new one needs a decision. (test_readme.py parses and plans every command; this one runs.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_demo import _small_sweep
from tests.test_readme import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
SLUICE = str(Path(sys.executable).parent / "sluice")
TRAIN_FAST = ["steps=20", "log_every=5", "eval_every=10", "eval_sequences=8",
              "checkpoint_every=0", "tensorboard=false", "device=cpu"]  # fmt: skip

# README command -> what is appended to run it here ({port}, {sweep}: filled in by the test)
RUN_WITH: dict[str, list[str]] = {
    "server --background": ["--port", "{port}"],
    "run --config configs/default.yaml --set tokenizer.vocab_size=8000 --run-name big": [
        "--set", "mix.total_tokens=300000",
    ],
    "train --config configs/train/tiny.yaml --shards runs/demo/shards --out runs/demo/t1": [
        *sum((["--set", s] for s in TRAIN_FAST), []),
    ],
    "sweep --config configs/sweep/demo.yaml --shards runs/demo/shards --out runs/demo/sweep": [
        "--config", "{sweep}",
    ],
    "end-to-end --config configs/default.yaml --set name=big --train-set model.d_model=96": [
        "--set", "mix.total_tokens=300000", "--sweep-config", "{sweep}",
    ],
    "ablate configs/ablation/demo.yaml --local": ["--seeds", "0,1", "--tokens", "16384"],
    # the same ablation through the server: every curation step and training run is reused
    "ablate configs/ablation/demo.yaml --seeds 0,1,2,3,4": ["--seeds", "0,1", "--tokens", "16384"],
}  # fmt: skip
# README command (its first words) -> why it does not run here, and what covers it instead
NOT_RUN: dict[str, str] = {
    "server": "foreground until Ctrl-C; the same server as --background (test_server_home.py)",
    "deploy": "serves or schedules until stopped (cron 03:00); test_deploy.py serves each kind",
    "server --background --host 10.0.0.1": "binds a cluster address this machine lacks",
    "run --config configs/default.yaml --ray-address 10.0.0.1:6379": "needs the README's Ray "
    "cluster; test_cluster.py runs two nodes in network namespaces",
    "train --config configs/train/1b.yaml": "a 1B model on 2 nodes × 8 GPUs; "
    "test_trainer_dist.py runs torchrun's multi-process path on CPU",
}


def _classify(argv: list[str]) -> str:
    line = " ".join(argv)
    if line in RUN_WITH:
        return "run"
    if any(line == k or (line.startswith(k + " ") and k != "server") for k in NOT_RUN):
        return "not run"
    return "unlisted"


def test_every_readme_command_is_run_or_says_why_not():
    unlisted = [" ".join(c) for c in COMMANDS if _classify(c) == "unlisted"]
    assert not unlisted, f"README commands neither run nor listed in NOT_RUN: {unlisted}"
    ran = {" ".join(c) for c in COMMANDS if _classify(c) == "run"}
    assert ran == set(RUN_WITH), set(RUN_WITH) - ran  # RUN_WITH names no command README dropped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_readme_commands_run_as_written(tmp_path):
    work = tmp_path / "checkout"
    work.mkdir()
    for name in ("configs", "data", "curate"):  # what the configs name, relative to the checkout
        (work / name).symlink_to(ROOT / name)
    port = _free_port()
    sweep = _small_sweep(tmp_path)
    env = {**os.environ, "SLUICE_HOME": str(tmp_path / "home"), "SLUICE_QUIET": "1",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",  # README: export PREFECT_API_URL
           "PYTHONPATH": str(ROOT)}  # fmt: skip

    def sluice(argv: list[str]) -> str:
        line = " ".join(argv)
        extra = [a.format(port=port, sweep=sweep) for a in RUN_WITH[line]]
        proc = subprocess.run([SLUICE, *argv, *extra], cwd=work, env=env, capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    readme = [c for c in COMMANDS if _classify(c) == "run"]
    # each needs what the one before made (stable: README's order within a command)
    order = ["server", "run", "train", "sweep", "end-to-end", "ablate"]
    readme.sort(key=lambda c: order.index(c[0]))
    try:
        for argv in readme:
            if argv[0] == "train":  # the README's train/sweep lines read the demo run's shards
                (work / "runs" / "demo").mkdir(exist_ok=True)
                shards = work / "runs" / "demo" / "shards"
                if not shards.exists():
                    shards.symlink_to(work / "runs" / "big" / "shards")
            sluice(argv)
            if argv[0] == "run":
                manifest = json.loads((work / "runs/big/shards/manifest.json").read_text())
                assert manifest["tokenizer"]["vocab_size"] == 8000  # the README's --set
            elif argv[0] == "train":
                final = json.loads((work / "runs/demo/t1/final.json").read_text())
                assert final["steps"] == 20 and final["final_val_loss"] > 0
            elif argv[0] == "sweep":
                assert (work / "runs/demo/sweep/fit.json").exists()
            elif argv[0] == "end-to-end":
                report = json.loads((work / "runs/big/report.json").read_text())
                assert report["observed"] > 0
                final = json.loads((work / "runs/big/train/final.json").read_text())
                assert final["model"]["d_model"] == 96  # the README's --train-set
            elif argv[0] == "ablate":
                report = json.loads((work / "runs/ablation/demo/ablation.json").read_text())
                assert set(report["variants"]) == {"default", "no-near-dedup"}
    finally:
        subprocess.run([SLUICE, "server", "--stop"], cwd=work, env=env, timeout=120)
