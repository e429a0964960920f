"""The Prefect flow on a local Ray, end to end on the sample: shards, stats.json, artifact; and
the CLI around it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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


# A stage plugin whose first call kills its Ray worker process (the worker is lost, as when a
# node dies); the flag file makes it pass through on every later call.
CRASH_PLUGIN = """
import dataclasses
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from curate.dedup.minhash import NEAR_DEDUP
from curate.stage import Stage
from curate.stages import register


class CrashOnceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flag: str


def score(table, cfg):
    flag = Path(cfg.flag)
    if not flag.exists():
        flag.write_text(str(os.getpid()))
        os._exit(1)
    return table


register(Stage(name="crash_once", config=CrashOnceConfig, score=score))


def bucket_crashing_once(urls, cfg, bucket, n_buckets, **keys):
    flag = Path(os.environ["SLUICE_TEST_BUCKET_FLAG"])
    if bucket == 1 and not flag.exists():
        flag.write_text(str(os.getpid()))
        os._exit(1)
    return NEAR_DEDUP.bucket(urls, cfg, bucket, n_buckets, **keys)


# near dedup again (sharded: its bucket 1 kills its Ray worker the first time)
register(dataclasses.replace(NEAR_DEDUP, name="near_dedup_crash", bucket=bucket_crashing_once))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_flow_on_ray_runs_the_sample_to_shards(harness, tmp_path, monkeypatch):
    import ray
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        ArtifactFilterType,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from curate.config import PipelineConfig, load_config
    from curate.runner import run_pipeline
    from curate.shards.format import load_manifest
    from curate.stages import STAGES
    from flows.curate import run_curate

    # the plugin registers its stages in this process: gone again after the test (other tests
    # count the built-in stages)
    for name in ("crash_once", "near_dedup_crash"):
        monkeypatch.setitem(STAGES, name, None)  # undone at the end: absent again
        del STAGES[name]
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "sluice_crash_once.py").write_text(CRASH_PLUGIN)
    monkeypatch.syspath_prepend(str(plugin_dir))  # this process
    monkeypatch.setenv("PYTHONPATH", f"{plugin_dir}:{ROOT}")  # the Ray workers
    flag = tmp_path / "crashed.pid"
    bucket_flag = tmp_path / "bucket-crashed.pid"
    monkeypatch.setenv("SLUICE_TEST_BUCKET_FLAG", str(bucket_flag))
    cfg = load_config(
        DEFAULT,
        [
            *FAST,
            f"run_dir={tmp_path / 'flow'}",
            "name=flowtest",
            "ray.num_cpus=2",
            "prefect.artifact_key=sluice-funnel-test",
            "plugins=[sluice_crash_once]",
        ],
    )
    data = cfg.model_dump(mode="json")
    data["stages"].append({"name": "crash_once", "options": {"flag": str(flag)}})
    data["stages"].append({"name": "near_dedup_crash", "options": {"buckets": 2}})
    cfg = PipelineConfig.model_validate(data)
    stats = run_curate(cfg)
    assert flag.exists()  # a worker died in the middle of the stage; Ray ran the part again
    assert bucket_flag.exists()  # ... and in a bucket task: Ray ran the bucket again
    assert (tmp_path / "flow" / "near_dedup_crash" / "buckets" / "bucket-00001.parquet").exists()
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
    # one Prefect task per chain or step (``prefect.parts_per_task: all``), each with its
    # progress artifact, complete; its task run named after the chain and its parts
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[artifacts[0].flow_run_id]))
        )
        progress = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                type=ArtifactFilterType(any_=["progress"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[artifacts[0].flow_run_id]),
            )
        )
    n_parts = len(json.loads((run / "parts.json").read_text())["parts"])
    names = {r.name for r in runs}
    assert f"extract..exact_dedup.map-{n_parts}-parts" in names, names
    assert not any(n.startswith("extract..exact_dedup.map-000") for n in names)
    assert len(progress) >= 3 and all(a.data == 100.0 for a in progress)

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
    assert e.value.code == 2
    assert "stages[0].options.nope: Extra inputs are not permitted" in capsys.readouterr().err


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
    assert "== toxicity " in out and "-- removed: toxic" in out
    # forwarded commands import their module lazily and pass argv through
    import sys
    import types

    fake = types.ModuleType("train.sweep_cli")
    seen = {}
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "train.sweep_cli", fake)
    assert main(["sweep", "--budget", "1e15"]) == 0
    assert seen["argv"] == ["--budget", "1e15"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_and_no_start_is_a_clear_error(monkeypatch):
    from flows import server

    url = server.api_url(port=_free_port())
    monkeypatch.setenv("PREFECT_API_URL", url)
    with pytest.raises(RuntimeError, match="sluice server"):
        server.ensure_api(start=False)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_background_server_starts_answers_and_stops(tmp_path, monkeypatch):
    import time

    from flows import server

    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))  # its own database
    port = _free_port()
    url = server.start_background(port=port, timeout=240)
    try:
        assert url == f"http://127.0.0.1:{port}/api" and server.healthy(url)
        assert (tmp_path / "prefect" / "server.pid").exists()  # Prefect's own place
        assert server.start_background_owned(port=port) == (url, False)  # reused, not started
        monkeypatch.setenv("PREFECT_API_URL", url)
        assert server.ensure_api(start=False) == url
    finally:
        assert server.stop_background()
    deadline = time.monotonic() + 60
    while server.healthy(url) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not server.healthy(url)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_flow_and_in_process_executors_write_the_same_bytes_with_a_plugin_fit(
    harness, tmp_path, monkeypatch
):
    """The two executors over one plan: the small golden job plus a plugin stage with its own
    config and fit step (tests/plugin_stage.py), on Ray with a Prefect task per part
    (``prefect.parts_per_task: 1``) and in-process: every output file the same (timing files
    aside)."""
    from curate.runner import run_pipeline
    from flows.curate import run_curate
    from tests.golden import hash_run
    from tests.test_plan import plugin_config

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the Ray workers import tests.plugin_stage
    flow_cfg = plugin_config(tmp_path / "flow")
    local_cfg = plugin_config(tmp_path / "local")
    ray_tmp = tempfile.mkdtemp(prefix="sluice-t-", dir="/tmp")  # short: Ray's unix sockets
    flow_cfg.ray.temp_dir = local_cfg.ray.temp_dir = ray_tmp  # the same config.json
    flow_cfg.prefect.parts_per_task = local_cfg.prefect.parts_per_task = 1
    try:
        stats = run_curate(flow_cfg)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert stats["stages"]["short_for_domain"]["removed"]["short_for_domain"] > 0
    run_pipeline(local_cfg)
    flow, local = hash_run(Path(flow_cfg.run_url)), hash_run(Path(local_cfg.run_url))
    assert "short_for_domain/medians.json" in flow and "quality/model.bin" in flow
    assert flow == local


def test_batched_tasks_and_shard_writers_on_ray_then_a_finished_run_starts_no_ray(
    harness, tmp_path
):
    """``prefect.parts_per_task`` 2 (a Prefect task per two parts, a Ray task per part) and
    ``shards.writers`` 2 on Ray: every output the same as in-process; a rerun of the finished
    run submits nothing and starts no Ray, and changes nothing."""
    from curate.runner import nothing_to_run, run_pipeline
    from flows.curate import run_curate
    from tests.golden import golden_config, hash_run

    (tmp_path / "flow").mkdir()
    (tmp_path / "local").mkdir()
    flow_cfg = golden_config(tmp_path / "flow", "batched")
    local_cfg = golden_config(tmp_path / "local", "batched")
    ray_tmp = tempfile.mkdtemp(prefix="sluice-t-", dir="/tmp")  # short: Ray's unix sockets
    for c in (flow_cfg, local_cfg):
        c.prefect.parts_per_task = 2
        c.shards.writers = 2
        c.ray.temp_dir = ray_tmp
    assert not nothing_to_run(flow_cfg)
    try:
        run_curate(flow_cfg)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    run = Path(flow_cfg.run_url)
    tasks = json.loads((run / "tasks.json").read_text())
    n_parts = len(json.loads((run / "parts.json").read_text())["parts"])
    assert n_parts >= 3  # so that a batch holds two parts and another the rest
    assert len(tasks["steps"]["extract"]) == n_parts and all(tasks["steps"]["extract"])
    assert len(tasks["steps"]["shards.write"]) == 2
    run_pipeline(local_cfg)
    flow = hash_run(run)
    assert flow == hash_run(Path(local_cfg.run_url))
    assert any(k.startswith("packing/pieces-") for k in flow)

    assert nothing_to_run(flow_cfg)
    run_curate(flow_cfg)
    assert json.loads((run / "tasks.json").read_text())["nodes"] == {}
    assert hash_run(run) == flow


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dispatched_starts_a_call_that_raised_again_after_the_delay(harness, tmp_path):
    """``prefect.parts_per_task: all``: a call that raised runs again ``retry_delay_seconds``
    later (not at once) and its result takes its place; one that keeps raising fails the flow
    with its own error after ``retries`` re-runs."""
    import time

    import ray
    from prefect import flow

    from flows.curate import dispatched, reserved_cpus
    from flows.runtime import ray_init_kwargs

    def flaky(attempts: str, value: int) -> dict:
        """Raises on its first attempt per ``attempts`` file (of start times), then works."""
        log = Path(attempts)
        starts = (
            [*log.read_text().split(), str(time.time())] if log.exists() else [str(time.time())]
        )
        log.write_text("\n".join(starts))
        if value < 0 or len(starts) == 1:
            raise OSError(f"transient failure of call {value}")
        return {"value": value}

    @flow
    def run(calls: list, retries: int, delay: float) -> list:
        return dispatched(flaky, calls, retries, "flaky", retry_delay=delay)

    calls = [(str(tmp_path / f"call-{k}.log"), k) for k in range(3)]
    ray.init(**ray_init_kwargs(None, num_cpus=2))
    try:
        results = run(calls, retries=2, delay=1.5)
        assert [r["value"] for r in results] == [0, 1, 2]
        for path, _ in calls:
            first, second = map(float, Path(path).read_text().split())
            assert second - first >= 1.5  # started again after the delay, once
        with pytest.raises(OSError, match="transient failure of call -1"):
            run([(str(tmp_path / "bad.log"), -1)], retries=2, delay=0.0)
        assert len((tmp_path / "bad.log").read_text().split()) == 3  # 1 + 2 retries
        # a call that can use 8 cores reserves what the largest node has (2 here), and its
        # threads are told so (OMP_NUM_THREADS)
        assert reserved_cpus(8) == 2 and reserved_cpus(1) == 1

        @flow
        def threads() -> list:
            return dispatched(
                lambda: {"omp": os.environ.get("OMP_NUM_THREADS")}, [()], 0, "t", cpus=8
            )

        assert [r["omp"] for r in threads()] == ["2"]
    finally:
        ray.shutdown()
