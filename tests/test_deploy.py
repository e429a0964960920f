"""`sluice deploy`: a cron deployment on a real local Prefect server produces COMPLETED runs,
both served (``flow.serve``) and through a ``process`` work pool with a worker."""

from __future__ import annotations

import asyncio
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
