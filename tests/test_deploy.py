"""`sluice deploy`: a cron deployment on a real local Prefect server produces COMPLETED runs,
both served (``flow.serve``) and through a ``process`` work pool with a worker."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.prefect_server import REPO_ROOT, local_prefect_server, stop_group

pytestmark = pytest.mark.slow

CRON = "* * * * *"  # every minute: the finest cron step


def tiny_config(tmp: Path) -> Path:
    """Curate the code and rst samples (fast to extract) into small shards, on a 1-CPU Ray."""
    path = tmp / "tiny.yaml"
    path.write_text(
        f"""name: tiny
inputs:
  - {{path: data/sample/code, base_dir: {REPO_ROOT}, format: code, domain: code}}
  - {{path: data/sample/rst, base_dir: {REPO_ROOT}, format: text, domain: rst}}
parts: {{files_per_part: 64, bytes_per_part: 4000000}}
stages:
  - {{name: toxicity, options: {{}}}}
  - {{name: pii, options: {{}}}}
mix: {{weights: {{rst: 2, code: 1}}, total_tokens: 150000, max_epochs: 3}}
tokenizer: {{vocab_size: 600, sample_bytes: 200000, num_threads: 1}}
shards: {{seq_len: 128, sequences_per_file: 4096, val_fraction: 0.05}}
ray: {{num_cpus: 1, object_store_memory: 100000000}}
prefect: {{task_retries: 0, start_server: false}}
"""
    )
    return path


async def _runs(deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async with get_client() as client:
        dep = await client.read_deployment_by_name(deployment)
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
        )
        return [dep, runs]


def wait_completed(deployments: list[str], procs: list[subprocess.Popen], timeout: float) -> dict:
    """Poll until every deployment has a COMPLETED flow run; fail early on FAILED/CRASHED."""
    done: dict = {}
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline and len(done) < len(deployments):
        for name in deployments:
            if name in done:
                continue
            try:
                dep, runs = asyncio.run(_runs(name))
            except Exception as e:  # not registered yet
                last[name] = repr(e)
                continue
            last[name] = [(r.name, r.state_type.value if r.state_type else None) for r in runs]
            for r in runs:
                if r.state_type and r.state_type.value in ("FAILED", "CRASHED"):
                    pytest.fail(f"{name}: flow run {r.name} {r.state_type.value}: {r.state}")
                if r.state_type and r.state_type.value == "COMPLETED":
                    done[name] = (dep, r)
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"{p.args} exited with {p.returncode}")
        time.sleep(3)
    if len(done) < len(deployments):
        pytest.fail(f"no COMPLETED run within {timeout:.0f} s: {last}")
    return done


def test_cron_deployment_served_and_on_a_work_pool(tmp_path):
    cfg = tiny_config(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    with local_prefect_server(tmp_path) as server:
        deploy = [
            sys.executable,
            "-m",
            "flows.deploy",
            "--cron",
            CRON,
            "--config",
            str(cfg),
            "--api-url",
            server.url,
        ]
        # 1. work pool: registers and returns; a process worker runs the flow runs
        out = subprocess.run(
            [
                *deploy,
                "--work-pool",
                "sluice-test",
                "--name",
                "pool",
                "--set",
                "name=tiny-pool",
                "--set",
                f"run_dir={tmp_path}/runs/tiny-pool",
            ],
            env=server.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "prefect worker start --pool sluice-test" in out.stdout
        procs = []
        try:
            with open(logs / "worker.log", "wb") as w, open(logs / "serve.log", "wb") as s:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "prefect",
                            "worker",
                            "start",
                            "--pool",
                            "sluice-test",
                            "--type",
                            "process",
                            "--limit",
                            "1",
                        ],
                        env=server.env,
                        cwd=tmp_path,
                        stdout=w,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                # 2. served: the deployment's runs execute in the `sluice deploy` process
                procs.append(
                    subprocess.Popen(
                        [
                            *deploy,
                            "--serve",
                            "--name",
                            "served",
                            "--set",
                            "name=tiny-served",
                            "--set",
                            f"run_dir={tmp_path}/runs/tiny-served",
                        ],
                        env=server.env,
                        cwd=REPO_ROOT,
                        stdout=s,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            done = wait_completed(
                ["sluice-curate/pool", "sluice-curate/served"], procs, timeout=420
            )
        except BaseException:
            for f in ("worker.log", "serve.log"):
                print(f"--- {f}\n" + (logs / f).read_text(errors="replace")[-4000:])
            print("--- server\n" + server.log_tail())
            raise
        finally:
            for p in procs:
                stop_group(p)
        for name, (dep, run) in done.items():
            assert [s.schedule.cron for s in dep.schedules] == [CRON], name
            assert run.auto_scheduled or run.expected_start_time is not None
        assert done["sluice-curate/pool"][0].work_pool_name == "sluice-test"
        for run_name in ("tiny-pool", "tiny-served"):
            run_dir = tmp_path / "runs" / run_name
            assert (run_dir / "shards" / "manifest.json").exists(), run_name
            assert (run_dir / "report.html").exists()
        # the report was published as artifacts of the scheduled runs
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async def funnel_artifacts() -> list:
            async with get_client() as client:
                return await client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="funnel"))
                )

        arts = asyncio.run(funnel_artifacts())
        assert {a.key for a in arts} >= {"sluice-tiny-pool-funnel", "sluice-tiny-served-funnel"}
        assert all("| stage | docs in | kept |" in a.data for a in arts)


FAST_TRAIN = ["device=cpu", "tensorboard=false", "steps=8", "log_every=2", "eval_every=4",
              "eval_sequences=16", "checkpoint_every=0", "warmup_steps=2"]  # fmt: skip


def test_curation_completed_triggers_pretrain_on_its_shards(tmp_path):
    """`sluice deploy --flow curate --then pretrain`: the cron curation run completes, the
    deployment trigger starts sluice-pretrain on its shards, which trains and completes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    cfg = tiny_config(tmp_path)
    run_dir = tmp_path / "runs" / "chain"
    log = tmp_path / "serve.log"
    with local_prefect_server(tmp_path) as server:
        cmd = [sys.executable, "-m", "flows.deploy", "--cron", CRON, "--config", str(cfg),
               "--api-url", server.url, "--set", "name=chain", "--set", f"run_dir={run_dir}",
               "--then", "pretrain", "--train-config", "configs/train/tiny.yaml",
               *(a for s in FAST_TRAIN for a in ("--train-set", s))]  # fmt: skip
        env = {**server.env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            done = wait_completed(
                ["sluice-curate/sluice-curate", "sluice-pretrain/sluice-pretrain"], [proc], 600
            )
        except BaseException:
            print("--- serve\n" + log.read_text(errors="replace")[-6000:])
            print("--- server\n" + server.log_tail())
            raise
        finally:
            stop_group(proc)
        (curate_dep, curate_run), (train_dep, train_run) = done.values()
        with get_client(sync_client=True) as client:
            automations = client.read_automations_by_name("sluice-pretrain after sluice-curate")
            arts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="pretrain-")),
            )
            chained = [
                r for r in client.read_flow_runs()
                if r.deployment_id == train_dep.id and r.state and r.state.is_completed()
            ]  # fmt: skip
            curate_runs = {str(r.id): r for r in client.read_flow_runs()
                           if r.deployment_id == curate_dep.id}  # fmt: skip
    # the link: the pretrain run names a completed curate run, and an automation created it
    assert train_dep.schedules == [] and [s.schedule.cron for s in curate_dep.schedules] == [CRON]
    (automation,) = automations
    assert automation.enabled and automation.trigger.expect == {"sluice.curate.completed"}
    first = min(chained, key=lambda r: r.start_time)
    source = curate_runs[first.parameters["curate_run"]]
    assert source.state.is_completed() and source.end_time <= first.start_time
    assert first.parameters["shards"] == (run_dir / "shards").resolve().as_uri()
    assert first.created_by is not None and first.created_by.type == "AUTOMATION"
    assert first.parameters["training"]["overrides"] == FAST_TRAIN
    # it trained on that run's shards, into <run>/pretrain/<its name>
    out = run_dir / "pretrain" / first.name
    final = json.loads((out / "final.json").read_text())
    assert final["steps"] == 8 and math.isfinite(final["final_val_loss"])
    manifest = json.loads((run_dir / "shards" / "manifest.json").read_text())
    assert final["tokens"] <= manifest["splits"]["train"]["tokens"] * 8
    # and its progress showed in the UI as artifacts of that run
    mine = {a.key: a for a in sorted(arts, key=lambda a: a.created) if a.flow_run_id == first.id}
    assert mine[f"pretrain-progress-{first.name}"].data == 100.0
    table = json.loads(mine[f"pretrain-metrics-{first.name}"].data)
    assert table[-1]["step"] == 8 and len(table) >= 4
    assert all(r["train_loss"] > 0 and r["tokens_per_s"] > 0 for r in table)
