"""The ``pretrain`` Prefect flow on real tiny shards: prediction first, streamed metrics, report
artifacts; as a subflow; and bad shards failing with a reason."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from curate.shards.format import ShardFormatError
from flows.pretrain import pretrain
from tests.test_sweep import MINI
from train.scaling import NOT_IDENTIFIED
from train.sweep_cli import main as sweep_main

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "train" / "tiny.yaml")
FAST = ["device=cpu", "tensorboard=false", "steps=24", "log_every=4", "eval_every=8",
        "eval_sequences=0", "checkpoint_every=0", "warmup_steps=2"]  # fmt: skip


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def law(train_shards, tmp_path_factory):
    """A law fitted by a real mini sweep on the same shards."""
    tmp = tmp_path_factory.mktemp("law")
    (tmp / "mini.yaml").write_text(yaml.safe_dump({**MINI, "holdout": None}))
    rc = sweep_main(["--config", str(tmp / "mini.yaml"), "--shards", str(train_shards),
                     "--out", str(tmp / "sweep")])  # fmt: skip
    assert rc == 0
    return tmp / "sweep" / "fit.json"


def _logs(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
    return [log.message for log in logs]


def _flow_run_name(flow_run_id) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).name


def _artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return found[0] if found else None


@pytest.mark.timeout(300)
def test_pretrain_predicts_then_trains_and_reports(harness, train_shards, law, tmp_path):
    out = tmp_path / "run-a"
    state = pretrain(str(train_shards), TINY, str(out), law=str(law), overrides=FAST,
                     poll_s=0.2, return_state=True)  # fmt: skip
    assert state.is_completed()
    result = state.result()
    final = json.loads((out / "final.json").read_text())
    assert result["final"] == final and final["steps"] == 24
    assert result["plan"]["n_params"] == final["non_embedding_params"]
    assert result["plan"]["tokens"] == final["tokens"]
    # the prediction was on disk before training wrote anything
    pred_time = (out / "prediction.json").stat().st_mtime_ns
    assert pred_time < (out / "metrics.jsonl").stat().st_mtime_ns
    assert pred_time < (out / "final.json").stat().st_mtime_ns
    report = json.loads((out / "report.json").read_text())
    assert report["observed"] == final["final_val_loss"]
    logs = _logs(state.state_details.flow_run_id)
    assert _flow_run_name(state.state_details.flow_run_id) == "run-a"  # not "bipedal-swan"
    if report["identified"]:  # a number with its interval
        assert math.isfinite(report["predicted"])
        assert report["lo"] <= report["predicted"] <= report["hi"]
        assert report["rel_error"] == pytest.approx(
            abs(report["predicted"] - report["observed"]) / report["observed"]
        )
        assert any("predicted final val loss" in m for m in logs)
    else:  # the mini sweep's points may not identify the law: no number anywhere, a reason
        assert report["predicted"] is None and report["rel_error"] is None
        assert report["prediction"].startswith(NOT_IDENTIFIED + " (")
        assert any(NOT_IDENTIFIED in m for m in logs)
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    # metrics streamed as log lines while training ran in a subprocess
    steps = [m for m in logs if m.startswith("step ")]
    assert any(m.startswith("step 24 |") for m in steps) and len(steps) >= 6
    artifact = _artifact("pretrain-report-run-a")
    assert artifact is not None and "data:image/png;base64," in artifact.data
    assert f"{report['observed']:.4f}" in artifact.data
    assert _artifact("pretrain-prediction-run-a") is not None
    link = _artifact("pretrain-report-png-run-a").data
    assert f"({(out / 'report.png').resolve().as_uri()})" in link


@pytest.mark.timeout(300)
def test_pretrain_runs_as_a_subflow_in_process(harness, train_shards, law, tmp_path):
    from prefect import flow

    @flow
    def parent(out: str) -> float:
        res = pretrain(str(train_shards), TINY, out, law=str(law), overrides=FAST,
                       launcher="inprocess", poll_s=0.2)  # fmt: skip
        return res["report"]["observed"]

    out = tmp_path / "run-b"
    observed = parent(str(out))
    assert observed == json.loads((out / "final.json").read_text())["final_val_loss"]
    assert (out / "report.md").exists() and not (out / "train.log").exists()


def test_pretrain_without_law_and_bad_shards(harness, train_shards, tmp_path):
    out = tmp_path / "run-c"
    res = pretrain(str(train_shards), TINY, str(out), overrides=[*FAST, "steps=4"],
                   launcher="inprocess", poll_s=0.1)  # fmt: skip
    assert res["prediction"] is None and res["report"] is None
    assert res["final"]["steps"] == 4 and not (out / "prediction.json").exists()
    with pytest.raises(ShardFormatError, match="no manifest.json"):
        pretrain(str(tmp_path / "nothing"), TINY, str(tmp_path / "run-d"))
    with pytest.raises(ShardFormatError, match="seq_len"):
        pretrain(str(train_shards), TINY, str(tmp_path / "run-e"),
                 overrides=["model.seq_len=128"])  # fmt: skip
