"""The ``end-to-end`` flow (what ``sluice demo`` runs) on a reduced sample: documents → shards →
sweep → fitted law → prediction → training run → report; then a rerun that trains nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "configs" / "default.yaml"
# smaller than the demo: a 1k vocabulary, 300k tokens of mix, 8–32-step sweep runs
CURATE_FAST = ["tokenizer.vocab_size=1000", "tokenizer.sample_bytes=600000",
               "mix.total_tokens=300000"]  # fmt: skip


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _small_sweep(tmp_path: Path) -> Path:
    sweep = yaml.safe_load((ROOT / "configs" / "sweep" / "demo.yaml").read_text())
    sweep["base"] = str(ROOT / "configs" / "train" / "tiny.yaml")
    sweep["set"] = [s for s in sweep["set"] if not s.startswith("warmup_steps")]
    sweep["set"] += ["warmup_steps=2", "eval_sequences=32"]
    sweep["tokens"] = [8192, 16384, 32768]
    sweep["models"] = [{k: v for k, v in m.items() if k != "tokens"} for m in sweep["models"][:3]]
    sweep["fit_bootstrap"] = 10
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_end_to_end_flow_predicts_then_trains_and_reports(harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from curate.shards.format import load_manifest
    from flows.end_to_end import end_to_end

    run = tmp_path / "e2e"
    sweep_config = _small_sweep(tmp_path)
    kwargs = dict(
        config_path=str(DEFAULT),
        sweep_config=str(sweep_config),
        overrides=[*CURATE_FAST, f"run_dir={run}", "name=e2etest"],
        local_curation=True,  # the curate flow on Ray is tested in test_flow.py
        launcher="inprocess",
    )
    report = end_to_end(**kwargs)

    manifest = load_manifest(run / "shards")
    assert manifest.splits["train"].tokens > 0 and manifest.splits["val"].tokens > 0
    assert manifest.tokenizer.vocab_size == 1000
    assert report["curation"]["shard_tokens"]["train"] == manifest.splits["train"].tokens
    assert 0 < report["curation"]["docs_kept"] <= report["curation"]["docs_in"]

    fit = run / "sweep" / "fit.json"
    prediction = run / "train" / "prediction.json"
    final = run / "train" / "final.json"
    assert fit.exists() and prediction.exists() and final.exists()
    assert report["sweep"]["points"] == 9  # 3 models × 3 budgets
    assert fit.stat().st_mtime <= prediction.stat().st_mtime
    assert report["prediction_written_before_training"]
    final_data = json.loads(final.read_text())
    started = final.stat().st_mtime - final_data["wall_time_s"]
    assert prediction.stat().st_mtime <= started
    # the main run has ≥ 4× the compute of the largest sweep point
    assert report["main_run"]["compute_ratio"] >= 4.0
    assert final_data["tokens"] == report["main_run"]["tokens"]

    saved = json.loads((run / "report.json").read_text())
    md = (run / "report.md").read_text()
    assert saved["observed"] == pytest.approx(final_data["final_val_loss"])
    if saved["identified"]:
        for key in ("observed", "predicted", "lo", "hi"):
            assert math.isfinite(saved[key]), key
        assert saved["lo"] <= saved["predicted"] <= saved["hi"]
        assert saved["rel_error"] == pytest.approx(
            abs(saved["predicted"] - saved["observed"]) / saved["observed"]
        )
    else:  # 8–32-step points: the law is not identified, and every output says so
        assert saved["predicted"] is None and saved["rel_error"] is None
        assert "not identified: no prediction" in md
        assert "not identified: no prediction" in saved["prediction"]
    # the loss fell: below a uniform guess over the vocabulary and below the first eval
    assert saved["observed"] < math.log(1000)
    assert saved["observed"] < saved["val_curve"][0]["val_loss"]
    assert set(saved["references"]) == {"chinchilla", "epoch_ai"}
    assert "fitted on this sweep" in md and "Chinchilla" in md and "other data" in md
    assert (run / "report.png").read_bytes()[:4] == b"\x89PNG"
    html = (run / "report.html").read_text()  # the run's page, now with the training run
    assert "Funnel" in html and "Loss vs prediction" in html and "data:image/png;base64" in html
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["end-to-end-report-e2e", "pretrain-report-train"])
            )
        )
        runs = {r.flow_id: r.name for r in client.read_flow_runs()}
        flows = {f.id: f.name for f in client.read_flows()}
    assert {a.key for a in artifacts} == {"end-to-end-report-e2e", "pretrain-report-train"}
    # flow runs named after the Sluice run (the run's name; its training dir for the subflow)
    names = {flows[flow_id]: name for flow_id, name in runs.items()}
    assert names["end-to-end"] == "e2etest" and names["pretrain"] == "e2e-train", names

    # a rerun skips every finished part: no sweep run and no main run is trained again
    mtimes = {p: p.stat().st_mtime for p in (fit, prediction, final)}
    again = end_to_end(**kwargs)
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes
    assert "pretrain" not in again["timings_s"]
    assert again["observed"] == saved["observed"]


def test_cli_demo_and_end_to_end_options():
    from flows.cli import build_parser

    p = build_parser()
    a = p.parse_args(["end-to-end", "--config", "c.yaml", "--train-set", "steps=9", "--local"])
    assert (a.config, a.train_set, a.local, a.compute_factor) == ("c.yaml", ["steps=9"], True, 4.0)
    d = p.parse_args(["demo", "--set", "mix.total_tokens=1000", "--nproc", "2"])
    assert d.set == ["mix.total_tokens=1000"] and d.nproc == 2
    assert d.sweep_config.endswith("configs/sweep/demo.yaml")


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_forwarded_commands_reach_their_modules(command):
    """``sluice train|sweep --help`` runs the module's own parser (a subprocess, as a user)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", command, "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"usage: sluice {command}" in out.stdout and "--shards" in out.stdout
