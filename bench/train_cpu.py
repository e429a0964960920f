"""Tiny-model training throughput on CPU: the Sluice trainer vs a plain PyTorch loop.

Same model (``configs/train/tiny.yaml`` shape), same shards (built from data/sample with the
real tokenizer + shard writer), same batch, same number of steps, in the same process. The
plain loop holds all rows in one tensor and indexes random batches: no loader thread, no
logging, no checkpoint, no val loss: the floor the trainer's bookkeeping is measured against.
The two are run alternately ``--rounds`` times; the best of each is reported, as wall tokens/s
(steps after warm-up) and as tokens per CPU-second of the whole call (all threads: on a shared,
loaded machine the wall figure mostly measures the neighbours).

    python bench/train_cpu.py --steps 60 --rounds 2 [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/tokenize.py would shadow the standard library's tokenize: drop bench/ from the path
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tests.train_fixtures import build_shards  # noqa: E402
from train.data import ShardSplit  # noqa: E402
from train.model import GPT  # noqa: E402
from train.trainer import TrainConfig, build_optimizer, resolve_model, train  # noqa: E402

WARMUP = 5  # steps not timed in either loop


def plain_loop(cfg: TrainConfig, shards: Path, steps: int) -> dict:
    """A bare AdamW loop over the same rows: wall tokens/s after WARMUP steps, and tokens per
    CPU-second of the whole call (all threads; less sensitive to a loaded machine)."""
    cpu0 = time.process_time()
    split = ShardSplit(shards, "train")
    rows = torch.from_numpy(split.rows(np.arange(split.num_rows)))
    model_cfg = resolve_model(cfg, split.manifest, shards)
    torch.manual_seed(cfg.seed)
    model = GPT(model_cfg)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    B = cfg.micro_batch_size
    t0 = 0.0
    for step in range(steps + WARMUP):
        if step == WARMUP:
            t0 = time.perf_counter()
        batch = rows[torch.randint(0, len(rows), (B,), generator=g)]
        loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {
        "tokens_per_s": steps * B * model_cfg.seq_len / wall,
        "tokens_per_cpu_s": (steps + WARMUP) * B * model_cfg.seq_len / cpu,
    }


def sluice_loop(cfg: TrainConfig, shards: Path, steps: int, out: Path) -> dict:
    """tokens/s of train() over the steps after WARMUP (from its own metrics.jsonl windows)."""
    run_cfg = cfg.model_copy(
        update={
            "steps": steps + WARMUP,
            "log_every": WARMUP,
            "eval_every": 0,
            "checkpoint_every": 0,
            "eval_sequences": 16,
        }
    )
    cpu0 = time.process_time()
    final = train(run_cfg, shards, out, resume=False)
    cpu = time.process_time() - cpu0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]
    # windows after the first; each holds WARMUP steps (eval/checkpoint time is excluded)
    window = WARMUP * cfg.micro_batch_size * final["model"]["seq_len"]
    tokens = window * len(rows)
    seconds = sum(window / r["tokens_per_s"] for r in rows)
    return {
        "tokens_per_s": tokens / seconds,
        "tokens_per_cpu_s": final["tokens"] / cpu,
        "stall_frac": float(np.mean([r["stall_frac"] for r in rows])),
        "mfu": float(np.mean([r["mfu"] for r in rows])),
        "wall_time_s_incl_eval_ckpt": final["wall_time_s"],
        "params": final["params"],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: OpenMP spin-waits "
                    "on a loaded machine would otherwise dominate the CPU time)")  # fmt: skip
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = TrainConfig.from_yaml(ROOT / "configs/train/tiny.yaml").model_copy(
        update={
            "micro_batch_size": args.batch,
            "tensorboard": False,
            "device": "cpu",
            "threads": args.threads,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        build_shards(shards)
        plain, sluice = [], []
        for r in range(args.rounds):
            plain.append(plain_loop(cfg, shards, args.steps))
            sluice.append(sluice_loop(cfg, shards, args.steps, Path(tmp) / f"run{r}"))
    best = max(sluice, key=lambda s: s["tokens_per_s"])
    best_plain = max(p["tokens_per_s"] for p in plain)
    cpu_plain = max(p["tokens_per_cpu_s"] for p in plain)
    cpu_sluice = max(s["tokens_per_cpu_s"] for s in sluice)
    result = {
        "machine": {
            "nproc": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu": next(
                (
                    ln.split(":", 1)[1].strip()
                    for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if "model name" in ln
                ),
                platform.processor(),
            ),
            "loadavg_at_end": os.getloadavg(),
        },
        "model": "tiny.yaml (2 x 64, 4 heads, 2 KV heads), seq 64, vocab 1024",
        "steps_timed": args.steps,
        "batch": args.batch,
        "plain_tokens_per_s": [p["tokens_per_s"] for p in plain],
        "sluice_tokens_per_s": [s["tokens_per_s"] for s in sluice],
        "plain_tokens_per_cpu_s": [p["tokens_per_cpu_s"] for p in plain],
        "sluice_tokens_per_cpu_s": [s["tokens_per_cpu_s"] for s in sluice],
        "plain_best": best_plain,
        "sluice_best": best["tokens_per_s"],
        "sluice_over_plain": best["tokens_per_s"] / best_plain,
        "sluice_over_plain_per_cpu_s": cpu_sluice / cpu_plain,
        "plain_median": float(np.median([p["tokens_per_s"] for p in plain])),
        "sluice_median": float(np.median([s["tokens_per_s"] for s in sluice])),
        "sluice_stall_frac": best["stall_frac"],
        "sluice_mfu_vs_measured_cpu_peak": best["mfu"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
