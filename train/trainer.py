"""The pretraining loop: ``train(cfg, shards_dir, out_dir) -> final metrics``.

One function for every setting: in-process (one process, CPU or one GPU) and under torchrun
(``RANK``/``WORLD_SIZE`` in the environment; FSDP2 when the world size is > 1 or ``fsdp: true``).

Per optimizer step: ``grad_accum`` micro-batches of ``micro_batch_size`` sequences per rank
(global batch ``micro_batch_size × grad_accum × world_size`` sequences), gradients clipped,
AdamW step with the LR of the schedule. The loss is checked finite without a host sync per step:
the first non-finite step is kept on the device and read at log steps, before that step's update
(all ranks agree: the loss is all-reduced).
Every ``log_every`` steps a line goes to ``metrics.jsonl``, ``metrics.csv`` and TensorBoard;
every ``eval_every`` steps the loss on the fixed validation set; every ``checkpoint_every`` steps
and at the end a DCP checkpoint (``train/checkpoint.py``). A resumed run (same ``out_dir``)
continues the same loss trajectory: the data order is a function of the step (``train/data.py``),
the LR is a function of the step, and model/optimizer/RNG come back from the checkpoint.

Schedules: ``cosine`` (linear warmup, cosine to ``min_lr_ratio·lr``) and ``wsd`` (warmup, stable,
linear decay over the last ``decay_frac`` of the run). WSD gives several data sizes D from one
run: for every ``d`` in ``decay_at`` the run keeps a checkpoint at ``d − decay_frac·d`` (where
a run of ``d`` steps would start decaying; the stable phase is identical), and at the end
trains a *decayed copy* from it to step ``d`` in ``<out>/decay-<d>/`` and reports its val loss
in ``final.json["decay_branches"]`` (``decay_branches: false`` to skip; ``train(...,
init_from=...)`` runs one branch by hand).

MFU = tokens/s × FLOPs/token ÷ (peak × world size); FLOPs/token = ``GPT.flops_per_token``
(6·N + 12·L·H·Q·T, N = non-embedding params + LM-head matmul). Peak: a table of bf16 dense
peaks by GPU name, or on CPU a peak *measured* with an fp32 matmul at start (so CPU MFU means
"fraction of what this CPU's matmul reaches", not a spec-sheet figure); ``peak_flops`` overrides.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from curate.overrides import apply_overrides  # noqa: F401 - one --set parser (train.sweep)
from curate.shards.format import Manifest, ShardFormatError, load_manifest, sha256_file
from train.checkpoint import (
    CheckpointError,
    PendingCheckpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    step_dir,
)
from train.data import ShardSplit, TrainLoader, val_batches
from train.model import GPT, GPTConfig, sdpa_backend
from train.parallel import (
    DistInfo,
    all_reduce_sum,
    apply_activation_checkpointing,
    apply_compile,
    apply_fsdp,
    init_distributed,
    make_mesh,
)

# bf16 dense tensor-core peaks (FLOP/s, spec sheets without sparsity), matched as whole words
# in torch.cuda.get_device_name(), the longest key first ("H100 NVL" before "H100", "L40S"
# before "L40" before "L4"; "L4" does not match "L40")
GPU_PEAK_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H200 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),  # SXM
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
]


class TrainConfig(BaseModel):
    """Everything a run needs besides the shards and the output directory."""

    model_config = ConfigDict(extra="forbid")
    model: GPTConfig = Field(default_factory=GPTConfig)
    steps: int = 100
    micro_batch_size: int = 8  # sequences per rank per micro-step
    grad_accum: int = 1
    # optimizer
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    schedule: Literal["cosine", "wsd"] = "cosine"
    decay_frac: float = 0.2  # wsd: the last fraction of a run decays linearly to min_lr
    decay_at: list[int] = Field(default_factory=list)  # wsd: extra D points (steps), see doc
    decay_branches: bool = True  # wsd: train the decayed copies at the end of the run
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0: off
    fused_adamw: bool | None = None  # None: fused kernel on CUDA, foreach on CPU
    # data
    seed: int = 0  # model init
    data_seed: int | None = None  # data order (None: = seed)
    prefetch: int = 2  # batches prepared ahead by the loader thread (0: none)
    tokenizer_sha256: str | None = None  # expected tokenizer of the shards (None: any)
    # cadence
    log_every: int = 10
    eval_every: int = 100  # 0: only at the end
    eval_sequences: int = 256  # the fixed val set: the first N val rows (0: all)
    eval_batch_size: int = 0  # 0: micro_batch_size
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 3  # 0: keep all
    checkpoint_hash: bool = True  # sha256 of every checkpoint file (checked on load)
    # execution
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    compile: bool = False
    fsdp: bool = False  # FSDP2 even at world size 1 (always on when world size > 1)
    reshard_after_forward: bool = True  # the blocks' (the root is never resharded)
    activation_checkpointing: bool = False  # recompute each block in backward (less memory)
    loss_chunk: int = 0  # > 0: LM head + loss over chunks of this many tokens (less memory)
    async_checkpoint: bool = False  # dcp.async_save: training goes on while files are written
    verify_shards: bool = True  # sha256 of every shard against the manifest, once per file
    threads: int = 0  # torch intra-op threads on CPU (0: torch's default)
    peak_flops: float | None = None  # per device, for MFU (None: table / measured)
    tensorboard: bool = True
    record_data: bool = False  # write <out>/data-rank<r>.jsonl: the rows each rank trained on

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        from curate.config import load_model_yaml

        return load_model_yaml(cls, path, overrides)  # ConfigError names the key and source


class DataMismatchError(ValueError):
    """The shards do not fit the model config or the checkpoint (vocab, seq_len, tokenizer)."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


# --------------------------------------------------------------------------- schedule


def decay_start(cfg: TrainConfig, total: int) -> int:
    """WSD: first step of the decay phase of a run of ``total`` steps."""
    return total - max(1, round(cfg.decay_frac * total))


def lr_at(cfg: TrainConfig, step: int, total: int | None = None) -> float:
    """LR of optimizer step ``step`` (0-based) in a run of ``total`` steps."""
    total = total or cfg.steps
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    low = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        span = max(1, total - cfg.warmup_steps)
        p = min(1.0, (step - cfg.warmup_steps) / span)
        return low + (cfg.lr - low) * 0.5 * (1 + math.cos(math.pi * p))
    start = decay_start(cfg, total)
    if step < start:
        return cfg.lr
    p = min(1.0, (step - start + 1) / (total - start))
    return cfg.lr + (low - cfg.lr) * p


# --------------------------------------------------------------------------- checks


def shards_identity(manifest: Manifest) -> dict[str, Any]:
    return {
        "vocab_size": manifest.tokenizer.vocab_size,
        "seq_len": manifest.seq_len,
        "tokenizer_sha256": manifest.tokenizer.sha256,
    }


def resolve_model(cfg: TrainConfig, manifest: Manifest, shards_dir: Path) -> GPTConfig:
    """Fill vocab/seq_len from the manifest and refuse shards that do not fit the model."""
    m, where = cfg.model, shards_dir / "manifest.json"
    vocab = manifest.tokenizer.vocab_size
    if m.seq_len and m.seq_len != manifest.seq_len:
        raise DataMismatchError(
            f"{where}: shards have seq_len {manifest.seq_len}, model config says {m.seq_len}"
        )
    if m.vocab_size and m.vocab_size < vocab:
        raise DataMismatchError(
            f"{where}: tokenizer vocab_size {vocab} > model vocab_size {m.vocab_size}"
        )
    if cfg.tokenizer_sha256 and cfg.tokenizer_sha256 != manifest.tokenizer.sha256:
        raise DataMismatchError(
            f"{where}: tokenizer sha256 {manifest.tokenizer.sha256[:12]}…, config expects "
            f"{cfg.tokenizer_sha256[:12]}…"
        )
    tok = Path(manifest.tokenizer.path)
    tok = tok if tok.is_absolute() else shards_dir / tok
    if tok.exists() and sha256_file(tok) != manifest.tokenizer.sha256:
        raise DataMismatchError(f"{tok}: sha256 differs from the manifest's tokenizer hash")
    return m.model_copy(
        update={
            "seq_len": manifest.seq_len,
            # pad the embedding to a multiple of 64: faster matmuls, ids beyond vocab unused
            "vocab_size": m.vocab_size or 64 * math.ceil(vocab / 64),
        }
    )


def check_resume_meta(meta: dict[str, Any], manifest: Manifest, model_cfg: GPTConfig, path: Path):
    """A checkpoint only continues on the same model shape and the same kind of shards."""
    where = path / "meta.json"
    if meta.get("shards") != shards_identity(manifest):
        raise DataMismatchError(
            f"{where}: checkpoint was trained on shards {meta.get('shards')}, "
            f"these are {shards_identity(manifest)}"
        )
    if meta.get("model") != model_cfg.model_dump():
        raise CheckpointError(
            f"{where}: model config {meta.get('model')} != {model_cfg.model_dump()}"
        )


# --------------------------------------------------------------------------- peak FLOPs


_CPU_PEAK: float | None = None


def measured_cpu_peak(n: int = 1024, repeats: int = 5) -> float:
    """Best fp32 matmul FLOP/s of this CPU with torch's threads (measured once per process)."""
    global _CPU_PEAK
    if _CPU_PEAK is None:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        _CPU_PEAK = 2 * n**3 / best
    return _CPU_PEAK


def gpu_peak(name: str) -> tuple[float, str]:
    """(bf16 dense peak, table key) for a GPU name; (nan, why) when the table lacks it."""
    for key, value in sorted(GPU_PEAK_BF16, key=lambda kv: -len(kv[0])):
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", name):
            return value, f"table:{key}"
    return math.nan, f"unknown GPU {name!r}"


def peak_flops(device: torch.device, override: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s per device, where it comes from)."""
    if override:
        return override, "config"
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device))
    return measured_cpu_peak(), "measured fp32 matmul"


def set_matmul_precision(device: torch.device) -> str:
    """On CUDA, fp32 matmuls on TF32 tensor cores (``high``): fp32 runs go ~8x faster, and
    bf16 runs' remaining fp32 matmuls too. CPU keeps exact fp32 (``highest``)."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    return torch.get_float32_matmul_precision()


# --------------------------------------------------------------------------- logging


CSV_FIELDS = [
    "step", "tokens", "train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "mfu",
    "stall_frac", "elapsed_s",
]  # fmt: skip


class MetricsLog:
    """metrics.jsonl + metrics.csv + TensorBoard, rank 0 only; on resume, rows after the
    checkpoint's step are dropped (they are about to be trained again)."""

    def __init__(self, out: Path, start_step: int, tensorboard: bool, enabled: bool):
        self.enabled = enabled
        self.jsonl, self.csv = out / "metrics.jsonl", out / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        rows = []
        if self.jsonl.exists():
            rows = [json.loads(x) for x in self.jsonl.read_text().splitlines() if x.strip()]
            rows = [r for r in rows if r["step"] <= start_step]
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------- the loop


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    """AdamW; no weight decay on gains (1-D params). Fused kernel on CUDA (by default)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=device.type == "cuda" if cfg.fused_adamw is None else cfg.fused_adamw,
    )


@torch.no_grad()
def evaluate(model, val: ShardSplit, cfg: TrainConfig, info: DistInfo, autocast) -> float:
    """Mean token loss over the fixed val set (the same rows at every evaluation)."""
    model.eval()
    n = cfg.eval_sequences if cfg.eval_sequences > 0 else val.num_rows
    n = min(n, val.num_rows)
    n -= n % info.world_size  # every rank runs the same number of forwards (FSDP collectives)
    if n == 0:
        raise ShardFormatError(f"val split has {val.num_rows} rows < world size {info.world_size}")
    total = torch.zeros(2, dtype=torch.float64, device=info.device)
    for x, y in val_batches(val, n, cfg.eval_batch_size or cfg.micro_batch_size, info.rank,
                            info.world_size):  # fmt: skip
        x, y = x.to(info.device), y.to(info.device)
        with autocast():
            loss = model(x, y)
        total[0] += loss.double() * y.numel()
        total[1] += y.numel()
    all_reduce_sum(total)
    model.train()
    return float(total[0] / total[1])


def train(
    cfg: TrainConfig,
    shards_dir: str | Path,
    out_dir: str | Path,
    resume: bool = True,
    init_from: str | Path | None = None,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run; returns what it writes to ``<out_dir>/final.json``.

    ``resume``: continue from the newest checkpoint in ``<out_dir>/checkpoints`` if any.
    ``init_from``: otherwise start from this checkpoint directory (e.g. a WSD decay branch).
    ``stop_at``: stop after this step with a checkpoint (a planned preemption; the schedule
    still runs to ``cfg.steps``, so a later resume continues the same run).
    """
    t_start = time.perf_counter()
    shards_dir, out = Path(shards_dir), Path(out_dir)
    info = init_distributed(cfg.device)
    if cfg.threads and info.device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    matmul_precision = set_matmul_precision(info.device)
    manifest = load_manifest(shards_dir)
    model_cfg = resolve_model(cfg, manifest, shards_dir)
    # every shard's sha256 against the manifest and its token ids < vocab (TokenRangeError)
    train_split = ShardSplit(shards_dir, "train", manifest, verify=cfg.verify_shards)
    val_split = ShardSplit(shards_dir, "val", manifest, verify=cfg.verify_shards)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_root = out / "checkpoints"

    use_fsdp = cfg.fsdp or info.world_size > 1
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if info.device.type == "cuda" else "fp32"
    bf16 = precision == "bf16"

    torch.manual_seed(cfg.seed)  # identical init on every rank
    model = GPT(model_cfg, loss_chunk=cfg.loss_chunk).to(info.device)
    compute_dtype = torch.bfloat16 if bf16 else torch.float32
    attention = sdpa_backend(model_cfg, cfg.micro_batch_size, info.device, compute_dtype)
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    if cfg.compile:
        apply_compile(model)
    if use_fsdp:
        apply_fsdp(
            model,
            make_mesh(info),
            param_dtype=torch.bfloat16 if bf16 else None,
            reduce_dtype=torch.float32,
            reshard_after_forward=cfg.reshard_after_forward,
        )

    def autocast():
        # FSDP2 already computes in bf16 (MixedPrecisionPolicy); plain runs use autocast
        if bf16 and not use_fsdp:
            return torch.autocast(info.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    optimizer = build_optimizer(model, cfg, info.device)

    start_step, start_position, prior_elapsed = 0, None, 0.0
    source = latest_checkpoint(ckpt_root) if resume else None
    if source is None and init_from is not None:
        source = Path(init_from)
    if source is not None:
        check_resume_meta(read_meta(source), manifest, model_cfg, source)
        meta = load_checkpoint(source, model, optimizer, info.rank)
        start_step = int(meta["step"])
        start_position = int(meta["data"]["position"])
        data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
        if meta["data"]["seed"] != data_seed:
            raise DataMismatchError(
                f"{source / 'meta.json'}: data order seed {meta['data']['seed']}, "
                f"config says {data_seed}: resuming would repeat and skip sequences"
            )
        prior_elapsed = float(meta.get("elapsed_s", 0.0)) if source.parent == ckpt_root else 0.0
        if info.is_main:  # never silently: the run goes on from there
            print(f"train {out.name}: resuming from {source} (step {start_step} of {cfg.steps}; "
                  "--no-resume starts over)", file=sys.stderr, flush=True)  # fmt: skip

    B, A, W, T = cfg.micro_batch_size, cfg.grad_accum, info.world_size, model_cfg.seq_len
    tokens_per_step = B * A * W * T
    flops_per_token = model.flops_per_token(T)
    peak, peak_source = peak_flops(info.device, cfg.peak_flops)
    branch_points = {
        decay_start(cfg, d): d
        for d in (cfg.decay_at if cfg.schedule == "wsd" else [])
        if 0 < d < cfg.steps
    }
    log = MetricsLog(out, start_step, cfg.tensorboard, info.is_main)
    loader = TrainLoader(
        train_split, B, A, info.rank, W,
        seed=cfg.seed if cfg.data_seed is None else cfg.data_seed,
        start_step=start_step, device=info.device, prefetch=cfg.prefetch,
        start_position=start_position,
    )  # fmt: skip

    def tokens_at(step: int) -> int:
        """Tokens trained on before ``step`` (exact across resumes with another batch size)."""
        return loader.position(step) * T

    def meta_for(step: int, elapsed: float) -> dict[str, Any]:
        return {
            "tokens": tokens_at(step),
            "data": {
                "position": loader.position(step),
                "sequences_per_step": B * A * W,
                "seed": loader.seed,
            },  # fmt: skip
            "scheduler": {"name": cfg.schedule, "next_step": step, "total": cfg.steps},
            "world_size": W,
            "elapsed_s": elapsed,
            "model": model_cfg.model_dump(),
            "shards": shards_identity(manifest),
            "train_config": cfg.model_dump(),
        }

    pending: list[PendingCheckpoint] = []  # an async save still being written

    def finish_pending() -> None:
        while pending:
            pending.pop().finish()

    def checkpoint(step: int, wait: bool = False) -> Path:
        finish_pending()  # one save in flight at most
        saved = save_checkpoint(
            ckpt_root, step, model, optimizer,
            meta_for(step, prior_elapsed + time.perf_counter() - t_start),
            rank=info.rank, verify_hash=cfg.checkpoint_hash, keep=cfg.keep_checkpoints,
            protect=set(branch_points), async_save=cfg.async_checkpoint and not wait,
        )  # fmt: skip
        if isinstance(saved, PendingCheckpoint):
            pending.append(saved)
            return saved.path
        return saved

    if cfg.record_data:
        loader.record = []
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)

    def is_log_step(step: int) -> bool:
        """Whether the optimizer step that ends at ``step`` logs (and checks the loss)."""
        return (
            step == end
            or step % cfg.log_every == 0
            or (cfg.eval_every > 0 and step % cfg.eval_every == 0)
        )

    def diverged(bad: int, step: int, loss: float, lr: float) -> None:
        """Raise TrainingDivergedError; checkpoint the state if it is still the good one."""
        if bad == step:  # found before its update: the weights are still the good ones
            where = f"the state before that step (step {step}) is checkpointed in "
            where += str(checkpoint(step, wait=True))
        else:
            finish_pending()
            good = [p for p in list_checkpoints(ckpt_root) if int(p.name[5:]) <= bad]
            where = "the weights were updated since (checked at log steps); the last "
            where += f"checkpoint before it is {good[-1]}" if good else "no checkpoint precedes it"
        raise TrainingDivergedError(f"loss is {loss} in step {bad + 1} (lr {lr:.3g}); {where}")

    batches = iter(loader)
    model.train()
    step = start_step
    last_train = last_val = math.nan
    # the first step whose loss was not finite, tracked on the device (-1: none yet) and read
    # only at log steps, before that step's update: no host sync in the other steps
    first_bad = torch.full((), -1, dtype=torch.int64, device=info.device)
    window_t0, window_tokens, window_stall = time.perf_counter(), 0, loader.stall_s
    excluded = 0.0  # eval/checkpoint time inside the window (not training throughput)
    # a step bar on rank 0, shown only on a terminal (tqdm's disable=None): logs stay clean
    bar = tqdm(total=end, initial=step, desc="train", unit="step", disable=None if info.is_main else True,
               dynamic_ncols=True, leave=False)  # fmt: skip
    try:
        while step < end:
            if step in branch_points and step != start_step:
                t0 = time.perf_counter()
                if int(first_bad) >= 0:  # never checkpoint weights a non-finite loss updated
                    diverged(int(first_bad), step, math.nan, lr_at(cfg, step - 1))
                checkpoint(step)
                excluded += time.perf_counter() - t0
            lr = lr_at(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=info.device)
            for micro in range(A):
                x, y = next(batches)
                if use_fsdp:  # reduce-scatter gradients only on the last micro-step
                    model.set_requires_gradient_sync(micro == A - 1)
                with autocast():
                    loss = model(x, y) / A
                loss.backward()
                loss_sum += loss.detach().float()
            loss_global = all_reduce_sum(loss_sum) / W
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss_global), step, first_bad)
            if is_log_step(step + 1) and int(first_bad) >= 0:  # one sync per log step
                diverged(int(first_bad), step, float(loss_global), lr)
            grad_norm = None
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if hasattr(grad_norm, "full_tensor"):
                    grad_norm = grad_norm.full_tensor()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_tokens += tokens_per_step
            bar.update(1)

            last_step = step == end
            do_eval = last_step or (cfg.eval_every > 0 and step % cfg.eval_every == 0)
            do_log = is_log_step(step)
            if do_log:
                last_train = float(loss_global)  # syncs the device: timing below is real
                now = time.perf_counter()
                span = max(now - window_t0 - excluded, 1e-9)
                tps = window_tokens / span
                row: dict[str, Any] = {
                    "step": step,
                    "tokens": tokens_at(step),
                    "train_loss": last_train,
                    "lr": lr,
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "tokens_per_s": tps,
                    "mfu": tps * flops_per_token / (peak * W),
                    "stall_frac": (loader.stall_s - window_stall) / span,
                }
                if do_eval:
                    last_val = evaluate(model, val_split, cfg, info, autocast)
                    row["val_loss"] = last_val
                row["elapsed_s"] = prior_elapsed + time.perf_counter() - t_start
                log.write(row)
                bar.set_postfix(loss=f"{last_train:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
                if bar.disable and info.is_main:  # no terminal (logs, CI): a line per interval
                    val = f" val {row['val_loss']:.4f}" if "val_loss" in row else ""
                    print(f"train {out.name}: step {step}/{end} loss {last_train:.4f}{val} "
                          f"lr {lr:.3g} {tps:,.0f} tok/s", file=sys.stderr, flush=True)  # fmt: skip
                window_t0, window_tokens, window_stall = time.perf_counter(), 0, loader.stall_s
                excluded = 0.0
            if last_step or (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0):
                t0 = time.perf_counter()
                if int(first_bad) >= 0:
                    diverged(int(first_bad), step, math.nan, lr)
                checkpoint(step)
                excluded += time.perf_counter() - t0
        finish_pending()
    finally:
        bar.close()
        loader.close()
        log.close()
        if loader.record is not None:
            with open(out / f"data-rank{info.rank}.jsonl", "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in loader.record)

    if step == start_step and math.isnan(last_val):  # nothing left to train: evaluate anyway
        last_val = evaluate(model, val_split, cfg, info, autocast)
    elapsed = prior_elapsed + time.perf_counter() - t_start
    tokens = tokens_at(step)
    n_params = model.num_params(non_embedding=False)
    n_non_emb = model.num_params(non_embedding=True)
    final: dict[str, Any] = {
        "final_val_loss": last_val,
        "final_train_loss": last_train,
        "steps": step,
        "tokens": tokens,
        "params": n_params,
        "non_embedding_params": n_non_emb,
        "flops_per_token": flops_per_token,
        "flops": flops_per_token * tokens,
        "flops_6nd": 6 * n_non_emb * tokens,
        "wall_time_s": elapsed,
        "tokens_per_s": tokens / elapsed if elapsed > 0 else math.nan,
        "mfu": tokens * flops_per_token / elapsed / (peak * W) if elapsed > 0 else math.nan,
        "peak_flops": peak,
        "peak_flops_source": peak_source,
        "world_size": W,
        "fsdp": use_fsdp,
        "device": str(info.device),
        "device_name": (
            torch.cuda.get_device_name(info.device) if info.device.type == "cuda" else "cpu"
        ),
        "precision": precision,
        "float32_matmul_precision": matmul_precision,
        "sdpa_backend": attention,
        "activation_checkpointing": cfg.activation_checkpointing,
        "loss_chunk": cfg.loss_chunk,
        "model": model_cfg.model_dump(),
        "shards": shards_identity(manifest),
    }
    optimizer.state.clear()  # free the moments before the decay branches build their own
    branches: dict[str, Any] = {}
    if cfg.decay_branches and step == cfg.steps:
        for start, d in sorted(branch_points.items()):
            branch_cfg = cfg.model_copy(update={"steps": d, "decay_at": [], "checkpoint_every": 0})
            res = train(branch_cfg, shards_dir, out / f"decay-{d:08d}", resume=True,
                        init_from=step_dir(ckpt_root, start))  # fmt: skip
            branches[str(d)] = {k: res[k] for k in ("final_val_loss", "tokens", "flops", "steps")}
    final["decay_branches"] = branches
    if info.is_main:
        (out / "final.json").write_text(json.dumps(final, indent=2, sort_keys=True) + "\n")
    return final
