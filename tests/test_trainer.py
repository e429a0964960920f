"""The trainer on CPU with real shards: learning, logs, exact resume, WSD branches, errors."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from curate.shards.format import load_manifest
from train.checkpoint import CheckpointError, list_checkpoints
from train.cli import main as cli_main
from train.trainer import (
    DataMismatchError,
    TrainConfig,
    TrainingDivergedError,
    apply_overrides,
    decay_start,
    lr_at,
    train,
)

ROOT = Path(__file__).resolve().parent.parent
TINY_YAML = ROOT / "configs" / "train" / "tiny.yaml"


def tiny(**update) -> TrainConfig:
    """configs/train/tiny.yaml, made smaller still for tests."""
    base = TrainConfig.from_yaml(TINY_YAML)
    fields = {
        "micro_batch_size": 4,
        "log_every": 1,
        "eval_every": 0,
        "eval_sequences": 16,
        "checkpoint_every": 0,
        "tensorboard": False,
        "prefetch": 0,
    }
    return base.model_copy(update={**fields, **update})


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train_loss"] for r in rows}


def test_cli_run_learns_and_writes_logs(train_shards, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli_main(
        ["train", "--config", str(TINY_YAML), "--shards", str(train_shards), "--out", str(out),
         "--set", "steps=30", "--set", "eval_every=15", "--set", "log_every=5",
         "--set", "checkpoint_every=15"]
    )  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out.strip().splitlines()[-1])
    # no terminal: a line per log interval on stderr (issue 20)
    logged = [line for line in captured.err.splitlines() if line.startswith("train run: step")]
    assert [int(line.split()[3].split("/")[0]) for line in logged] == [5, 10, 15, 20, 25, 30]
    assert "val" in logged[2] and "tok/s" in logged[0]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
    for r in rows:
        assert {
            "step",
            "tokens",
            "train_loss",
            "lr",
            "tokens_per_s",
            "mfu",
            "stall_frac",
        } <= r.keys()
        assert r["tokens"] == r["step"] * 8 * 64 and r["tokens_per_s"] > 0
        assert r["mfu"] > 0 and 0 <= r["stall_frac"] < 1
    assert [r["step"] for r in rows if "val_loss" in r] == [15, 30]
    vocab = load_manifest(train_shards).tokenizer.vocab_size
    assert rows[0]["train_loss"] > rows[-1]["train_loss"] + 0.3
    assert rows[-1]["val_loss"] < math.log(vocab) - 0.5  # learned something beyond uniform
    with open(out / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [5, 10, 15, 20, 25, 30]
    assert list((out / "tb").glob("events.out.tfevents.*"))
    final = json.loads((out / "final.json").read_text())
    assert final["final_val_loss"] == rows[-1]["val_loss"] == printed["final_val_loss"]
    assert final["tokens"] == 30 * 8 * 64 and final["steps"] == 30
    assert final["flops"] == final["flops_per_token"] * final["tokens"]
    assert final["non_embedding_params"] < final["params"]
    assert final["peak_flops_source"] == "measured fp32 matmul"
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [
        "step-00000015", "step-00000030"
    ]  # fmt: skip
    # rerunning a finished run resumes at its end: nothing more is trained
    again = train(TrainConfig.from_yaml(TINY_YAML, ["steps=30"]), train_shards, out)
    assert "train run: resuming from" in capsys.readouterr().err  # said, not silent
    assert again["steps"] == 30 and again["final_val_loss"] == pytest.approx(
        final["final_val_loss"]
    )


def test_resume_continues_the_same_loss_trajectory(train_shards, tmp_path):
    cfg = tiny(steps=12, grad_accum=2, eval_every=6, prefetch=2)
    full = train(cfg, train_shards, tmp_path / "full")
    part = train(cfg, train_shards, tmp_path / "split", stop_at=6)
    assert part["steps"] == 6
    resumed = train(cfg, train_shards, tmp_path / "split")
    a, b = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 13))
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6, (a, b)
    assert abs(full["final_val_loss"] - resumed["final_val_loss"]) <= 1e-6


def test_nan_loss_stops_with_error_and_checkpoint(train_shards, tmp_path):
    cfg = tiny(steps=20, lr=1e6, grad_clip=0.0, warmup_steps=0)
    with pytest.raises(TrainingDivergedError, match=r"loss is (nan|inf).*checkpointed in") as e:
        train(cfg, train_shards, tmp_path / "nan")
    saved = list_checkpoints(tmp_path / "nan" / "checkpoints")
    assert len(saved) == 1 and str(saved[0]) in str(e.value)


def test_shards_that_do_not_fit_the_model_are_refused(train_shards, tmp_path):
    m = load_manifest(train_shards)
    with pytest.raises(DataMismatchError, match="seq_len 64.*says 128"):
        train(tiny(model=tiny().model.model_copy(update={"seq_len": 128})), train_shards, tmp_path)
    with pytest.raises(DataMismatchError, match="vocab_size 1024 > model vocab_size 512"):
        train(
            tiny(model=tiny().model.model_copy(update={"vocab_size": 512})), train_shards, tmp_path
        )
    with pytest.raises(DataMismatchError, match="tokenizer sha256"):
        train(tiny(tokenizer_sha256="0" * 64), train_shards, tmp_path)
    copy = tmp_path / "shards"
    shutil.copytree(train_shards, copy)
    (copy / m.tokenizer.path).write_bytes(b"another tokenizer")
    with pytest.raises(DataMismatchError, match="tokenizer.model: sha256 differs"):
        train(tiny(), copy, tmp_path / "x")
    # a checkpoint trained on other shards
    out = tmp_path / "run"
    train(tiny(steps=2), train_shards, out)
    meta_path = list_checkpoints(out / "checkpoints")[-1] / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["shards"]["tokenizer_sha256"] = "f" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataMismatchError, match="checkpoint was trained on shards"):
        train(tiny(steps=4), train_shards, out)


def test_corrupt_or_truncated_checkpoint_names_the_file(train_shards, tmp_path):
    out = tmp_path / "run"
    train(tiny(steps=2), train_shards, out)
    ckpt = list_checkpoints(out / "checkpoints")[-1]
    data = ckpt / "__0_0.distcp"
    blob = data.read_bytes()
    data.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"__0_0\.distcp: .*truncated"):
        train(tiny(steps=4), train_shards, out)
    data.write_bytes(blob[:-8] + b"\0" * 8)  # same size, different bytes
    with pytest.raises(CheckpointError, match=r"__0_0\.distcp: sha256 mismatch"):
        train(tiny(steps=4), train_shards, out)
    data.write_bytes(blob)
    (ckpt / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"meta\.json: not valid JSON"):
        train(tiny(steps=4), train_shards, out)


def test_schedules():
    cfg = tiny(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, steps=100)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 10) == pytest.approx(1.0) and lr_at(cfg, 99) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(cfg, 55) == pytest.approx(0.55)  # cosine midpoint
    wsd = cfg.model_copy(update={"schedule": "wsd", "decay_frac": 0.2})
    assert decay_start(wsd, 100) == 80
    assert all(lr_at(wsd, s) == 1.0 for s in range(10, 80))
    assert lr_at(wsd, 99) == pytest.approx(0.1) and lr_at(wsd, 89) == pytest.approx(0.55)
    # a shorter run's stable phase is the same: what the decay branches rely on
    assert all(lr_at(wsd, s) == lr_at(wsd, s, total=50) for s in range(decay_start(wsd, 50)))


def test_wsd_decay_branch_equals_a_run_of_that_length(train_shards, tmp_path):
    cfg = tiny(steps=12, schedule="wsd", decay_frac=0.25, warmup_steps=2, decay_at=[8])
    main = train(cfg, train_shards, tmp_path / "main")
    branch = main["decay_branches"]["8"]
    assert branch["steps"] == 8 and branch["tokens"] == 8 * 4 * 64
    alone = train(cfg.model_copy(update={"steps": 8, "decay_at": []}), train_shards, tmp_path / "b")
    assert abs(branch["final_val_loss"] - alone["final_val_loss"]) <= 1e-6
    a, b = losses(tmp_path / "b"), losses(tmp_path / "main" / "decay-00000008")
    assert all(abs(a[s] - b[s]) <= 1e-6 for s in b) and sorted(b) == [7, 8]


def test_overrides():
    data = apply_overrides({"model": {"n_layer": 2}}, ["model.n_layer=4", "decay_at=[10, 20]"])
    assert data == {"model": {"n_layer": 4}, "decay_at": [10, 20]}
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["steps"])
    with pytest.raises(ValueError):
        TrainConfig.model_validate(apply_overrides({}, ["no_such_field=1"]))


def test_cli_builds_the_torchrun_command_for_several_processes_and_nodes():
    from train.cli import parser, torchrun_command

    argv = ["--config", "c.yaml", "--shards", "s", "--out", "o", "--nproc", "8", "--nnodes", "2",
            "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "29400",
            "--set", "steps=5"]  # fmt: skip
    cmd = torchrun_command(parser().parse_args(argv))
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nproc-per-node=8", "--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1",
            "--master-port=29400"} <= set(cmd)  # fmt: skip
    worker = cmd[cmd.index("train.cli") + 1 :]
    assert worker == ["--config", "c.yaml", "--shards", "s", "--out", "o", "--set", "steps=5"]


def test_peak_flops_table_matches_whole_names():
    from train.trainer import gpu_peak

    expect = {
        "NVIDIA H100 80GB HBM3": 989e12,
        "NVIDIA H100 PCIe": 756e12,
        "NVIDIA H100 NVL": 835e12,
        "NVIDIA H200": 989e12,
        "NVIDIA H200 NVL": 835e12,
        "NVIDIA GH200 480GB": 989e12,
        "NVIDIA A100-SXM4-80GB": 312e12,
        "NVIDIA A10": 125e12,
        "NVIDIA L4": 121e12,
        "NVIDIA L40": 181e12,
        "NVIDIA L40S": 362e12,
    }
    for name, peak in expect.items():
        assert gpu_peak(name)[0] == peak, name
    assert math.isnan(gpu_peak("NVIDIA A10G")[0])  # not in the table: no guess


def test_fp32_matmuls_use_tf32_on_cuda_only():
    import torch

    from train.trainer import set_matmul_precision

    before = torch.get_float32_matmul_precision()
    try:
        assert set_matmul_precision(torch.device("cpu")) == before
        assert set_matmul_precision(torch.device("cuda")) == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_nan_between_log_steps_is_found_at_the_next_log_step(train_shards, tmp_path):
    cfg = tiny(steps=20, lr=3e3, grad_clip=0.0, warmup_steps=0, log_every=5, checkpoint_every=2,
               keep_checkpoints=0)  # fmt: skip
    with pytest.raises(TrainingDivergedError, match=r"loss is (nan|inf) in step (\d+)") as e:
        train(cfg, train_shards, tmp_path / "nan")
    bad = int(re.search(r"in step (\d+)", str(e.value)).group(1))  # 1-based
    # no checkpoint holds weights that a non-finite loss updated (steps >= bad)
    saved = [int(p.name[5:]) for p in list_checkpoints(tmp_path / "nan" / "checkpoints")]
    assert all(s < bad for s in saved), (saved, bad)
    if "checkpointed in" not in str(e.value):  # found after the update: names the last good one
        assert "checkpoint before it is" in str(e.value) or "no checkpoint precedes" in str(e.value)


def _planted_pickle(path: Path, marker: Path) -> None:
    """A pickle that, unpickled without restriction, creates ``marker`` (stands for os.system)."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps({"torch": Payload()}))


def _rehash(ckpt: Path) -> None:
    """What an attacker controlling the folder would do: make meta.json match the files."""
    import hashlib

    meta = json.loads((ckpt / "meta.json").read_text())
    for name, rec in meta["files"].items():
        blob = (ckpt / name).read_bytes()
        rec.update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    (ckpt / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("target", ["rng-rank0.pt", ".metadata"])
def test_planted_pickle_in_a_checkpoint_is_refused_not_run(train_shards, tmp_path, target):
    out = tmp_path / "run"
    train(tiny(steps=2), train_shards, out)
    ckpt = list_checkpoints(out / "checkpoints")[-1]
    marker = tmp_path / "code-ran"
    _planted_pickle(ckpt / target, marker)
    _rehash(ckpt)
    with pytest.raises(CheckpointError):
        train(tiny(steps=4), train_shards, out)
    assert not marker.exists()


def test_async_checkpoints_resume_the_same_trajectory(train_shards, tmp_path):
    cfg = tiny(steps=6, checkpoint_every=2, keep_checkpoints=0, async_checkpoint=True)
    full = train(cfg, train_shards, tmp_path / "full")
    saved = list_checkpoints(tmp_path / "full" / "checkpoints")
    assert [p.name for p in saved] == [f"step-{s:08d}" for s in (2, 4, 6)]
    meta = json.loads((saved[-1] / "meta.json").read_text())
    assert all(rec["sha256"] for rec in meta["files"].values())
    assert not list(saved[-1].glob("files-rank*.json"))  # per-rank lists merged away
    part = tmp_path / "part"
    train(cfg, train_shards, part, stop_at=4)
    train(cfg, train_shards, part)
    a, b = losses(tmp_path / "full"), losses(part)
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6
    assert full["steps"] == 6


def test_corrupt_or_out_of_vocab_shards_are_named_errors(train_shards, tmp_path):
    import hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.ipc as ipc

    from train.data import ShardCorruptError, TokenRangeError

    shards = tmp_path / "shards"
    shutil.copytree(train_shards, shards)
    m = load_manifest(shards)
    target = shards / m.splits["train"].files[0].path
    table = ipc.open_stream(target.read_bytes()).read_all()  # in memory: no mapping to break

    def rewrite(fill: int) -> None:
        ids = table.column("input_ids").combine_chunks()
        values = np.full(len(ids.values), fill, dtype=np.uint16)
        flat = pa.FixedSizeListArray.from_arrays(pa.array(values), m.seq_len + 1)
        new = table.set_column(0, table.schema.field("input_ids"), flat)
        tmp = target.with_suffix(".new")
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_stream(sink, new.schema) as w:
            w.write_table(new)
        tmp.replace(target)  # a new file: mappings of the old one stay valid

    rewrite(0)  # a zeroed shard: valid Arrow, valid ids, wrong bytes
    with pytest.raises(ShardCorruptError, match=rf"{target.name}: sha256 .* differs"):
        train(tiny(steps=1), shards, tmp_path / "zeroed")
    rewrite(0xFFFF)  # ids past the vocabulary, with a manifest that agrees on the hash
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["splits"]["train"]["files"][0]["sha256"] = hashlib.sha256(
        target.read_bytes()
    ).hexdigest()
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenRangeError, match=rf"{target.name}: row 0 holds token id 65535"):
        train(tiny(steps=1), shards, tmp_path / "ff")
