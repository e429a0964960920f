"""The Prefect flow on a local Ray, end to end on the sample: shards, stats.json, artifact; and
the CLI around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows import runtime  # noqa: F401 - telemetry off before prefect and ray
from flows.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "configs" / "default.yaml"
FAST = ["tokenizer.vocab_size=1000", "tokenizer.sample_bytes=600000", "mix.total_tokens=300000"]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_flow_on_ray_runs_the_sample_to_shards(harness, tmp_path):
    import ray
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from curate.config import load_config
    from curate.runner import run_pipeline
    from curate.shards.format import load_manifest
    from flows.curate import run_curate

    cfg = load_config(
        DEFAULT,
        [
            *FAST,
            f"run_dir={tmp_path / 'flow'}",
            "name=flowtest",
            "ray.num_cpus=2",
            "prefect.artifact_key=sluice-funnel-test",
        ],
    )
    stats = run_curate(cfg)
    assert not ray.is_initialized()  # the task runner started and stopped its own Ray
    run = tmp_path / "flow"
    assert json.loads((run / "stats.json").read_text()) == stats
    for name, s in stats["stages"].items():
        assert s["docs_in"] == s["kept"] + s["removed_total"] + s["quarantined_total"], name
    manifest = load_manifest(run / "shards")
    assert manifest.splits["train"].tokens > 0 and manifest.source_run == "flowtest"

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sluice-funnel-test"]))
        )
    assert artifacts and "| toxicity |" in artifacts[0].data and "Mixture" in artifacts[0].data

    # the same job in-process gives the same bytes as the tasks on Ray
    local = cfg.model_copy(update={"run_dir": str(tmp_path / "local")})
    run_pipeline(local)
    for p in sorted(run.rglob("*")):
        if p.suffix in (".parquet", ".arrow", ".model") or p.name == "manifest.json":
            assert p.read_bytes() == (tmp_path / "local" / p.relative_to(run)).read_bytes(), p


def test_cli_parses_every_command():
    p = build_parser()
    a = p.parse_args(
        [
            "run",
            "--config",
            "c.yaml",
            "--set",
            "a=1",
            "--set",
            "b=2",
            "--ray-address",
            "auto",
            "--run-name",
            "x",
        ]
    )
    assert (a.config, a.set, a.ray_address, a.run_name) == ("c.yaml", ["a=1", "b=2"], "auto", "x")
    assert p.parse_args(["train", "runs/x"]).argv == ["runs/x"]
    assert p.parse_args(["server", "--background"]).background
    assert p.parse_args(["inspect", "runs/x", "-n", "2"]).n == 2


def test_cli_config_error_exits_with_the_key(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--config", str(DEFAULT), "--local", "--set", "stages[0].options.nope=1"])
    assert "stages[0].options.nope: Extra inputs are not permitted" in str(e.value)


def test_cli_local_run_then_inspect_and_forwarding(tmp_path, capsys, monkeypatch):
    run = tmp_path / "cli"
    assert (
        main(
            [
                "run",
                "--config",
                str(DEFAULT),
                "--local",
                "--set",
                f"run_dir={run}",
                *[x for s in FAST for x in ("--set", s)],
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| extract |" in out and "shards/train:" in out
    assert main(["inspect", str(run), "-n", "1", "--stage", "toxicity"]) == 0
    out = capsys.readouterr().out
    assert "== toxicity:" in out and "removed · toxic" in out
    # forwarded commands import their module lazily and pass argv through
    import sys
    import types

    fake = types.ModuleType("train.sweep_cli")
    seen = {}
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "train.sweep_cli", fake)
    assert main(["sweep", "--budget", "1e15"]) == 0
    assert seen["argv"] == ["--budget", "1e15"]
