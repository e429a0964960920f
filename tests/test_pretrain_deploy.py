"""The ``sluice-pretrain`` deployment's pieces without a server: where the shards are, the
shard checks' one-line reasons, the CLI's refusals, and the progress table's predicted column."""

from __future__ import annotations

import json
import shutil

import pytest

from curate.shards.format import ShardFormatError
from flows.deploy import REPO_ROOT, build_parser, main_args, resolve_shards
from flows.pretrain import check_shards
from flows.progress import TrainingProgress


@pytest.fixture
def run_dir(train_shards, tmp_path):
    """A copy of the real sample shards as ``<run>/shards`` (tests may damage it)."""
    run = tmp_path / "run"
    shutil.copytree(train_shards, run / "shards")
    return run


def test_resolve_shards_accepts_run_dir_shards_dir_and_file_url(run_dir):
    shards = run_dir / "shards"
    assert resolve_shards(str(run_dir), "") == shards
    assert resolve_shards(str(shards), "") == shards
    assert resolve_shards(shards.as_uri(), "") == shards
    assert resolve_shards("configs", "") == REPO_ROOT / "configs"  # relative: to the repo
    with pytest.raises(ValueError, match="local or shared-disk path"):
        resolve_shards("s3://bucket/run/shards", "")
    with pytest.raises(ValueError, match="give shards"):
        resolve_shards("", "")
    with pytest.raises(ValueError, match="not a flow run id"):
        resolve_shards("", "yesterday's run")


def _one_line_reason(shards) -> str:
    with pytest.raises(ShardFormatError) as e:
        check_shards.fn(str(shards))
    message = str(e.value)
    assert "\n" not in message, message
    return message


def test_check_shards_passes_good_shards_and_names_what_is_wrong(run_dir):
    shards = run_dir / "shards"
    manifest = json.loads((shards / "manifest.json").read_text())
    summary = check_shards.fn(str(shards))
    assert summary["train_tokens"] == manifest["splits"]["train"]["tokens"] > 0
    assert summary["vocab_size"] == manifest["tokenizer"]["vocab_size"]

    # one byte flipped inside a shard: its sha256 no longer matches the manifest
    first = shards / manifest["splits"]["train"]["files"][0]["path"]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    assert "sha256" in _one_line_reason(shards)

    # a manifest that does not parse: one line, not pydantic's page
    (shards / "manifest.json").write_text(json.dumps({**manifest, "seq_len": "long"}))
    assert "invalid manifest" in _one_line_reason(shards)
    (shards / "manifest.json").unlink()
    assert "no manifest.json" in _one_line_reason(shards)


def test_check_shards_rejects_another_tokenizer(run_dir):
    shards = run_dir / "shards"
    manifest = json.loads((shards / "manifest.json").read_text())
    tokenizer = shards / manifest["tokenizer"]["path"]
    assert tokenizer.exists()
    tokenizer.write_bytes(tokenizer.read_bytes() + b"\n")
    assert "another vocabulary" in _one_line_reason(shards)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--flow", "end-to-end", "--then", "pretrain", "--cron", "0 3 * * *"], "--flow curate"),
        (["--flow", "curate"], "needs a schedule"),
        (["--flow", "pretrain", "--nproc", "0"], "training config error"),
        (["--flow", "pretrain", "--train-set", "stepz=3"], "training config error"),
    ],
)
def test_deploy_cli_refuses_before_touching_a_server(argv, reason):
    args = build_parser().parse_args([*argv, "--api-url", "http://127.0.0.1:9/api"])
    with pytest.raises(SystemExit, match=reason):
        main_args(args)


def test_progress_outside_prefect_keeps_rows_and_interpolates_the_prediction(tmp_path):
    (tmp_path / "prediction.json").write_text("{}")  # replaced below by a real one
    from train.report import CurvePoint, Prediction, write_prediction

    curve = [CurvePoint(tokens=t, loss=loss, lo=loss - 0.1, hi=loss + 0.1)
             for t, loss in ((1000, 5.0), (3000, 4.0))]  # fmt: skip
    write_prediction(
        Prediction(
            n_params=10,
            tokens=3000,
            flops=1.8e5,
            loss=4.0,
            lo=3.9,
            hi=4.1,
            level=0.9,
            law={},
            fitted_points=4,
            n_bootstrap=0,
            curve=curve,
        ),  # fmt: skip
        tmp_path,
    )
    progress = TrainingProgress(tmp_path, total_steps=4)
    assert not progress.enabled  # no flow run: nothing to publish, nothing raised
    progress.update([{"step": 2, "tokens": 2000, "train_loss": 4.5, "mfu": float("nan")}])
    (row,) = progress.table_rows()
    assert row["predicted_val_loss"] == pytest.approx(4.5)
    assert row["mfu"] is None and row["val_loss"] is None and row["step"] == 2


def test_sluice_deploy_parses_the_chain_options():
    from flows.cli import build_parser as sluice_parser

    a = sluice_parser().parse_args(
        ["deploy", "--flow", "curate", "--cron", "0 3 * * *", "--then", "pretrain",
         "--train-config", "configs/train/tiny.yaml", "--train-set", "steps=9", "--nproc", "2",
         "--predict", "--work-pool", "sluice"]
    )  # fmt: skip
    assert (a.flow, a.then, a.train_set, a.nproc, a.predict, a.work_pool) == (
        "curate", "pretrain", ["steps=9"], 2, True, "sluice"
    )  # fmt: skip
