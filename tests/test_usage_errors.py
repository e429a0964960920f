"""Typical mistakes (issue 20): each is one line on stderr, exit code 2, found before any
server, Ray or extraction starts (all run in one fresh interpreter: the assertion that no Ray
started is about that process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.golden import REPO_ROOT

RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, sys, time
    from flows.cli import main
    out = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code
        out.append({"code": code, "stderr": err.getvalue(),
                    "seconds": time.perf_counter() - start})
    ray = sys.modules.get("ray")
    print(json.dumps({"calls": out, "ray_started": bool(ray and ray.is_initialized()),
                      "ray_imported": ray is not None}))
    """
)


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mistakes")
    run = tmp / "runs" / "demo"
    (run / "shards").mkdir(parents=True)
    (run / "shards" / "manifest.json").write_text("{}")
    bad_train = tmp / "train.yaml"
    bad_train.write_text((REPO_ROOT / "configs/train/tiny.yaml").read_text() + "\nlrr: 0.1\n")
    bad_sweep = tmp / "sweep.yaml"
    bad_sweep.write_text(
        (REPO_ROOT / "configs/sweep/demo.yaml").read_text().replace("base: ../train", "base: no")
    )
    bad_stage = tmp / "curate.yaml"
    bad_stage.write_text(
        (REPO_ROOT / "configs/default.yaml")
        .read_text()
        .replace("threshold: 0.5", "treshold: 0.5", 1)
    )
    cfg = str(REPO_ROOT / "configs/default.yaml")
    train = str(REPO_ROOT / "configs/train/tiny.yaml")
    cases = {
        "set typo": (
            ["run", "--config", cfg, "--set", "tokenizer.vocab_sise=8000"],
            ["did you mean 'vocab_size'", "(from --set tokenizer.vocab_sise=8000)"],
        ),
        "stage option typo": (
            ["run", "--config", str(bad_stage)],
            [str(bad_stage), "treshold", "did you mean 'threshold'"],
        ),
        "missing input": (
            ["run", "--config", cfg, "--set", "inputs[0].path=data/no-such-folder"],
            ["data/no-such-folder"],
        ),
        "mix weight of no domain": (
            ["run", "--config", cfg, "--set", "mix.weights={nope: 1.0}"],
            ["mix.weights", "'nope' names no domain"],
        ),
        "train on a run dir": (
            ["train", "--config", train, "--shards", str(run), "--out", str(tmp / "t")],
            [f"did you mean --shards {run}/shards"],
        ),
        "train RUN": (["train", str(run)], ["--shards", "usage"]),
        "train config typo": (
            ["train", "--config", str(bad_train), "--shards", f"{run}/shards", "--out", "x"],
            [str(bad_train), "lrr", "did you mean 'lr'"],
        ),
        "sweep base missing": (
            ["sweep", "--config", str(bad_sweep), "--shards", f"{run}/shards", "--out", "x"],
            ["base: not found"],
        ),
        "end-to-end train-set typo": (
            ["end-to-end", "--config", cfg, "--train-set", "stepz=3"],
            ["did you mean 'steps'", "(from --set stepz=3)"],
        ),
        "inspect missing run": (["inspect", str(tmp / "runs/nope")], ["not a run directory"]),
        "report missing run": (["report", str(tmp / "runs/nope")], ["not a run directory"]),
        "status missing run": (["status", str(tmp / "runs/nope")], ["not a run directory"]),
    }
    # a mistake the checks let through fails fast: no server to start, none to reach
    no_server = [
        "--set",
        "prefect.start_server=false",
        "--set",
        "prefect.api_url=http://127.0.0.1:9/api",
    ]
    argvs = [[*a, *no_server] if a[0] == "run" else a for a, _ in cases.values()]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(argvs)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    calls = dict(zip(cases, result["calls"], strict=True))
    return {"tmp": tmp, "cases": cases, "calls": calls, "result": result}


CASES = [
    "set typo",
    "stage option typo",
    "missing input",
    "mix weight of no domain",
    "train on a run dir",
    "train RUN",
    "train config typo",
    "sweep base missing",
    "end-to-end train-set typo",
    "inspect missing run",
    "report missing run",
    "status missing run",
]


@pytest.mark.parametrize("case", CASES)
def test_a_mistake_is_one_line_and_exit_2(mistakes, case):
    call = mistakes["calls"][case]
    lines = call["stderr"].strip().splitlines()
    assert call["code"] == 2, call
    assert len(lines) == 1, call["stderr"]
    for needle in mistakes["cases"][case][1]:
        assert needle in lines[0], (needle, lines[0])
    assert call["seconds"] < 60, call  # nothing heavy started (measured on a loaded machine)


def test_no_ray_started_and_report_created_nothing(mistakes):
    assert not mistakes["result"]["ray_started"]
    assert not (mistakes["tmp"] / "runs" / "nope").exists()
