"""Prefect flow ``pretrain``: check the shards, predict the loss, train, report observed vs predicted.

    pretrain(shards_dir, train_config, out_dir, nproc=1, law="sweep/fit.json")

1. ``check_shards``: the manifest loads (``curate.shards.format.load_manifest``) and both splits
   hold tokens; otherwise the flow fails with the reason.
2. ``plan_run``: the TrainConfig (YAML path or dict, plus ``overrides``) resolved against the
   manifest (vocab, seq_len) is written to ``<out>/config.yaml``; N (non-embedding) and D
   (steps × global batch × seq_len) follow from it.
3. ``predict_loss`` (when ``law`` is a fit written by ``sluice sweep``): ``prediction.json``
   and a markdown artifact, **before** training starts.
4. ``run_training``: ``python -m train.cli`` as a subprocess (it re-executes itself under
   torchrun when ``nproc`` > 1), or ``train()`` in a thread of this process
   (``launcher="inprocess"``, one process only); meanwhile ``metrics.jsonl`` is tailed and every
   row becomes a Prefect log line.
5. ``publish_report``: ``report.json``/``report.md``/``report.png`` in the run dir, and the table
   with the PNG inline (``data:image/png``) as a markdown artifact, plus a link artifact.

``pretrain`` is a plain ``@flow``: call it from another flow and it runs as a subflow.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import yaml  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.artifacts import create_link_artifact, create_markdown_artifact  # noqa: E402

from curate.shards.format import ShardFormatError, load_manifest  # noqa: E402
from flows.artifacts import artifact_key  # noqa: E402
from flows.runtime import as_task, flow_run_namer, in_prefect_run, in_process, run_log  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = ("train_loss", "val_loss", "lr", "tokens_per_s", "mfu")


@task(name="check-shards")
def check_shards(shards_dir: str) -> dict[str, Any]:
    """The manifest's summary, once the shards are known good: the manifest loads, both splits
    hold tokens, every listed file opens with the manifest's schema and row count (and, with
    ``train.data``'s checks, its sha256 and token ids < vocab_size), and the tokenizer file, when
    present, is the one the manifest names. Otherwise fails with a one-line reason."""
    try:
        return _check_shards(shards_dir)
    except ShardFormatError as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise type(e)(lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1].strip()}") from e


def _check_shards(shards_dir: str) -> dict[str, Any]:
    from curate.shards.format import sha256_file
    from train.data import ShardSplit

    manifest = load_manifest(shards_dir)
    for split in ("train", "val"):
        info = manifest.splits.get(split)
        if info is None or info.tokens <= 0 or not info.files:
            raise ShardFormatError(f"{shards_dir}: the manifest has no {split} tokens")
        missing = [f.path for f in info.files if not (Path(shards_dir) / f.path).exists()]
        if missing:
            raise ShardFormatError(f"{shards_dir}: {split} shard files missing: {missing[:3]}")
        ShardSplit(shards_dir, split, manifest)
    tokenizer = Path(shards_dir) / manifest.tokenizer.path  # an absolute path stays absolute
    if tokenizer.exists() and sha256_file(tokenizer) != manifest.tokenizer.sha256:
        raise ShardFormatError(
            f"{tokenizer}: sha256 differs from the manifest's tokenizer (another vocabulary)"
        )
    return {
        "seq_len": manifest.seq_len,
        "vocab_size": manifest.tokenizer.vocab_size,
        "tokenizer_sha256": manifest.tokenizer.sha256,
        "train_tokens": manifest.splits["train"].tokens,
        "val_tokens": manifest.splits["val"].tokens,
        "source_run": manifest.source_run,
    }


def model_params(model: Any, count: str = "non_embedding") -> int:
    """N, the model's non-embedding (or ``"total"``) parameters (``GPT.num_params``), counted on
    a model built on the meta device (no memory, no initialisation)."""
    import torch

    from train.model import GPT

    with torch.device("meta"):
        return GPT(model).num_params(non_embedding=count == "non_embedding")


@task(name="plan-run")
def plan_run(
    train_config: str | dict[str, Any],
    overrides: list[str],
    shards: dict[str, Any],
    out_dir: str,
    nproc: int,
) -> dict[str, Any]:
    """Resolve and write ``<out>/config.yaml``; N (non-embedding) and D of the run."""
    from train.model import GPTConfig
    from train.trainer import TrainConfig, apply_overrides

    if isinstance(train_config, dict):
        cfg = TrainConfig.model_validate(apply_overrides(dict(train_config), overrides))
    else:
        cfg = TrainConfig.from_yaml(train_config, overrides)
    model: GPTConfig = cfg.model
    if model.seq_len and model.seq_len != shards["seq_len"]:
        raise ShardFormatError(
            f"shards have seq_len {shards['seq_len']}, the config says {model.seq_len}"
        )
    model = model.model_copy(
        update={
            "seq_len": shards["seq_len"],
            "vocab_size": model.vocab_size or shards["vocab_size"],
        }
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    # both counts: the prediction takes the one its law was fitted with (Fit.param_count)
    by_count = {c: model_params(model, c) for c in ("total", "non_embedding")}
    n_params = by_count["non_embedding"]
    tokens = cfg.steps * cfg.micro_batch_size * cfg.grad_accum * nproc * shards["seq_len"]
    if tokens > shards["train_tokens"]:
        run_log(
            f"the run reads {tokens:,} tokens, the shards hold {shards['train_tokens']:,}: "
            "it repeats data, which the scaling law does not model",
            "warning",
        )
    return {"config_path": str(config_path), "n_params": n_params,
            "n_params_by_count": by_count, "tokens": tokens}  # fmt: skip


@task(name="predict-loss")
def predict_loss(
    law: str, n_params: int | dict[str, int], tokens: int, out_dir: str, level: float
) -> dict:
    from train.report import predict_run, write_prediction

    prediction = predict_run(law, n_params, tokens, level=level)
    path = write_prediction(prediction, out_dir)
    n, pct = prediction.n_params, int(100 * level)
    if prediction.identified:
        value = f"{prediction.loss:.4f} | [{prediction.lo:.4f}, {prediction.hi:.4f}]"
        run_log(
            f"predicted final val loss {prediction.loss:.4f} [{prediction.lo:.4f}, "
            f"{prediction.hi:.4f}] ({pct}%) for N={n:,} ({prediction.param_count}), D={tokens:,}"
        )
    else:
        from train.scaling import NOT_IDENTIFIED

        value = f"{NOT_IDENTIFIED} ({prediction.reason}) | –"
        run_log(f"final val loss: {NOT_IDENTIFIED} ({prediction.reason})", "warning")
    if in_prefect_run():
        create_markdown_artifact(
            markdown=(
                f"# Predicted val loss (before training)\n\n| N ({prediction.param_count}) |"
                f" D tokens | C = 6ND | predicted | {pct}% interval |\n|---:|---:|---:|---:|---|\n"
                f"| {n:,} | {tokens:,} | {prediction.flops:.3g} | {value} |\n\nLaw: `{law}`\n"
            ),
            key=artifact_key("pretrain-prediction", Path(out_dir).name),
            description=f"loss prediction for {out_dir}",
        )
    return prediction.model_dump(mode="json") | {"path": str(path)}


def _format_row(row: dict[str, Any]) -> str:
    parts = [f"step {row.get('step')}", f"tokens {row.get('tokens'):,}"]
    for k in METRIC_KEYS:
        v = row.get(k)
        if isinstance(v, int | float):
            parts.append(f"{k} {v:.4g}")
    return " | ".join(parts)


class MetricsTail:
    """Reads the complete new lines of ``metrics.jsonl`` since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # leave a half-written line for the next call
        self.offset += end
        from train.report import metrics_rows

        return metrics_rows(data[:end])


@task(name="run-training")
def run_training(
    config_path: str,
    shards_dir: str,
    out_dir: str,
    nproc: int,
    launcher: Literal["subprocess", "inprocess"],
    poll_s: float,
) -> dict[str, Any]:
    """Train and stream metrics.jsonl rows as log lines; returns final.json."""
    from flows.progress import TrainingProgress
    from train.trainer import TrainConfig

    out = Path(out_dir)
    tail = MetricsTail(out / "metrics.jsonl")
    progress = TrainingProgress(out, TrainConfig.from_yaml(config_path).steps)
    progress.update(tail.read())  # a resumed run: its rows so far, not logged again
    if launcher == "inprocess":
        if nproc != 1:
            raise ValueError(
                "launcher='inprocess' runs one process; use 'subprocess' for nproc > 1"
            )
        from train.trainer import TrainConfig, train

        error: list[BaseException] = []

        def target() -> None:
            try:
                train(TrainConfig.from_yaml(config_path), shards_dir, out_dir, resume=True)
            except BaseException as e:  # noqa: BLE001 - re-raised in the flow's thread
                error.append(e)

        worker = threading.Thread(target=target, name="train", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(poll_s)
            rows = tail.read()
            progress.update(rows)
            for row in rows:
                run_log(_format_row(row))
        if error:
            raise error[0]
    else:
        cmd = [sys.executable, "-m", "train.cli", "--config", config_path, "--shards",
               shards_dir, "--out", out_dir, "--nproc", str(nproc)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
        run_log("launching: " + " ".join(cmd))
        log_path = out / "train.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=REPO_ROOT)  # fmt: skip
            while proc.poll() is None:
                time.sleep(poll_s)
                rows = tail.read()
                progress.update(rows)
                for row in rows:
                    run_log(_format_row(row))
        if proc.returncode != 0:
            lines = log_path.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(
                f"training exited with {proc.returncode}; last lines of {log_path}:\n"
                + "\n".join(lines)
            )
    rows = tail.read()
    progress.update(rows, final=True)
    for row in rows:
        run_log(_format_row(row))
    final = json.loads((out / "final.json").read_text())
    run_log(
        f"final val loss {final['final_val_loss']:.4f} after {final['tokens']:,} tokens "
        f"({final['wall_time_s']:.1f} s, {final['tokens_per_s']:.0f} tok/s)"
    )
    return final


@task(name="publish-report")
def publish_report(out_dir: str) -> dict[str, Any]:
    """report.{json,md,png} in the run dir, as artifacts too (PNG inline, plus a file link)."""
    from train.report import write_report

    paths = write_report(out_dir)
    result = json.loads(paths["json"].read_text())
    png = base64.b64encode(paths["png"].read_bytes()).decode()
    name = Path(out_dir).name
    if in_prefect_run():
        markdown = paths["markdown"].read_text()
        create_markdown_artifact(
            markdown=f"{markdown}\n![loss vs prediction](data:image/png;base64,{png})\n",
            key=artifact_key("pretrain-report", name),
            description=f"val loss observed vs predicted, {out_dir}",
        )
        create_link_artifact(
            link=paths["png"].resolve().as_uri(),
            link_text="report.png",
            key=artifact_key("pretrain-report-png", name),
            description=f"loss vs prediction plot, {out_dir}",
        )
    if result.get("identified", True):
        run_log(
            f"observed {result['observed']:.4f} vs predicted {result['predicted']:.4f} "
            f"[{result['lo']:.4f}, {result['hi']:.4f}]: |pred − obs|/obs = "
            f"{100 * result['rel_error']:.2f}%"
        )
    else:
        run_log(f"observed {result['observed']:.4f}; {result['prediction']}")
    return result | {"paths": {k: str(v) for k, v in paths.items()}}


def _run_name(params: dict[str, Any]) -> str:
    """The training run's name: its directory's, with the curation run's for ``RUN/train``."""
    out = Path(params["out_dir"])
    return f"{out.parent.name}-{out.name}" if out.name == "train" else out.name


@flow(name="pretrain", flow_run_name=flow_run_namer(_run_name, "pretrain"))
def pretrain(
    shards_dir: str,
    train_config: str | dict[str, Any],
    out_dir: str,
    nproc: int = 1,
    law: str | None = None,
    overrides: list[str] | None = None,
    launcher: Literal["subprocess", "inprocess"] = "subprocess",
    level: float = 0.9,
    poll_s: float = 2.0,
) -> dict[str, Any]:
    """Train on ``shards_dir`` into ``out_dir``; with ``law`` (a ``fit.json`` from
    ``sluice sweep``) predict the final val loss first and report observed vs predicted."""
    return pretrain_chain(
        shards_dir, train_config, out_dir, nproc, law, overrides, launcher, level, poll_s, as_task
    )


def pretrain_chain(
    shards_dir: str,
    train_config: str | dict[str, Any],
    out_dir: str,
    nproc: int = 1,
    law: str | None = None,
    overrides: list[str] | None = None,
    launcher: Literal["subprocess", "inprocess"] = "subprocess",
    level: float = 0.9,
    poll_s: float = 2.0,
    call: Any = in_process,
) -> dict[str, Any]:
    """The steps of ``pretrain``, each run by ``call(task, *args)``: as Prefect tasks
    (``as_task``, the flow) or as plain functions (``in_process``, ``sluice demo --local``)."""
    shards = call(check_shards, str(shards_dir))
    plan = call(plan_run, train_config, list(overrides or []), shards, str(out_dir), nproc)
    prediction = None
    if law:
        prediction = call(
            predict_loss, str(law), plan["n_params_by_count"], plan["tokens"], str(out_dir), level
        )
    else:
        run_log("no scaling law given: training without a loss prediction")
    final = call(
        run_training, plan["config_path"], str(shards_dir), str(out_dir), nproc, launcher, poll_s
    )
    report = call(publish_report, str(out_dir)) if prediction else None
    return {"shards": shards, "plan": plan, "prediction": prediction, "final": final,
            "report": report}  # fmt: skip
