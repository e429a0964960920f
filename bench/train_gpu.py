"""GPT-2-124M-shape training throughput on one GPU: plain PyTorch vs Sluice trainer vs FSDP2.

For a machine with a CUDA GPU (not run on the CPU-only development machines). One call:

1. ``plain``: the naive single-GPU baseline of ARCHITECTURE.md: the same ``train.model.GPT``,
   whole-model ``torch.compile``, bf16 autocast, fused AdamW, random batches from a GPU tensor;
2. ``sluice``: ``train.trainer.train`` (per-block + head compile, bf16 autocast, fused AdamW,
   memory-mapped loader thread with pinned memory, per-step NaN check, logging);
3. ``sluice_fsdp_w1``: the same with FSDP2 at world size 1 (bf16 params, fp32 reduce,
   ``reshard_after_forward=False``: nothing to save by resharding on one GPU).

Model: Llama-style GPT-2-small shape (12 x 768, 12 heads, SwiGLU 2048, tied, vocab 50304),
seq 1024, micro-batch 32. Data: shards built from data/sample with the real tokenizer trainer
and shard writer (vocab 8192 < 50304: ids fit). Throughput is measured after ``--warmup``
steps (compilation), in the trainer from its own metrics windows (eval/checkpoint excluded).
MFU = tokens/s x FLOPs/token / peak, FLOPs/token = ``GPT.flops_per_token`` (6N + 12LHQT, N =
non-embedding + LM head), peak from ``train.trainer.GPU_PEAK_BF16`` by device name.

    python bench/train_gpu.py --steps 100 --warmup 20 --json bench/train_gpu.json
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/tokenize.py would shadow the standard library's tokenize: drop bench/ from the path
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tests.train_fixtures import build_shards  # noqa: E402
from train.data import ShardSplit  # noqa: E402
from train.model import GPT, GPTConfig  # noqa: E402
from train.trainer import TrainConfig, peak_flops, train  # noqa: E402

MODEL = GPTConfig(
    vocab_size=50304, seq_len=1024, n_layer=12, n_head=12, d_model=768, ffn_hidden=2048
)
# --cpu-smoke: the same code paths on CPU with a tiny model (no compile, fp32), to check the
# script itself on a machine without a GPU. Its numbers mean nothing.
SMOKE = GPTConfig(vocab_size=1024, seq_len=64, n_layer=2, n_head=4, d_model=64)


def reset() -> None:
    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain(
    shards: Path, batch: int, steps: int, warmup: int, model_cfg: GPTConfig, device: torch.device
) -> dict:
    cuda = device.type == "cuda"
    split = ShardSplit(shards, "train")
    rows = torch.from_numpy(split.rows(np.arange(split.num_rows))).to(device)
    torch.manual_seed(0)
    model = GPT(model_cfg).to(device)
    flops = model.flops_per_token()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), fused=cuda)
    step_fn = torch.compile(model) if cuda else model
    g = torch.Generator(device=device).manual_seed(0)
    t0 = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            t0 = time.perf_counter()
        batch_rows = rows[torch.randint(0, len(rows), (batch,), device=device, generator=g)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = step_fn(batch_rows[:, :-1], batch_rows[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    tps = steps * batch * model_cfg.seq_len / (time.perf_counter() - t0)
    out = {"tokens_per_s": tps, "flops_per_token": flops, "final_loss": float(loss.detach())}
    del model, opt, step_fn, rows
    reset()
    return out


def sluice(
    shards: Path,
    out: Path,
    batch: int,
    steps: int,
    warmup: int,
    fsdp: bool,
    model_cfg: GPTConfig,
    device: torch.device,
) -> dict:
    cuda = device.type == "cuda"
    log_every = 10
    warmup = log_every * max(1, -(-warmup // log_every))  # whole windows
    cfg = TrainConfig(
        model=model_cfg,
        steps=warmup + steps,
        micro_batch_size=batch,
        lr=6e-4,
        warmup_steps=10,
        log_every=log_every,
        eval_every=0,
        eval_sequences=64,
        checkpoint_every=0,
        checkpoint_hash=False,
        compile=cuda,
        precision="bf16" if cuda else "fp32",
        device=device.type,
        fsdp=fsdp,
        reshard_after_forward=False,
        tensorboard=False,
    )
    final = train(cfg, shards, out, resume=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if r["step"] > warmup]
    window = log_every * batch * model_cfg.seq_len
    tps = window * len(timed) / sum(window / r["tokens_per_s"] for r in timed)
    reset()
    return {
        "tokens_per_s": tps,
        "flops_per_token": final["flops_per_token"],
        "final_loss": final["final_train_loss"],
        "stall_frac": float(np.mean([r["stall_frac"] for r in timed])),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps (compilation)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--shard-mb", type=float, default=4.0, help="sample text for the shards")
    ap.add_argument("--only", nargs="*", default=["plain", "sluice", "sluice_fsdp_w1"])
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "train_gpu.json")
    ap.add_argument("--cpu-smoke", action="store_true", help="check the script on CPU (tiny)")
    args = ap.parse_args(argv)
    model_cfg, vocab = (SMOKE, 1024) if args.cpu_smoke else (MODEL, 8192)
    if args.cpu_smoke:
        device, name = torch.device("cpu"), "cpu (smoke run: numbers mean nothing)"
    elif not torch.cuda.is_available():
        sys.exit("bench/train_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    else:
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
    peak, peak_source = peak_flops(device)
    result: dict = {
        "device_name": name,
        "torch": torch.__version__,
        "peak_flops": peak,
        "peak_source": peak_source,
        "model": model_cfg.model_dump(),
        "batch": args.batch,
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        t0 = time.perf_counter()
        mb = int(args.shard_mb * 1e6)
        build_shards(shards, seq_len=model_cfg.seq_len, vocab=vocab, max_bytes=mb)
        result["shard_build_s"] = time.perf_counter() - t0
        for variant in args.only:
            if variant == "plain":
                r = plain(shards, args.batch, args.steps, args.warmup, model_cfg, device)
            else:
                r = sluice(
                    shards, Path(tmp) / variant, args.batch, args.steps, args.warmup,
                    fsdp=variant == "sluice_fsdp_w1", model_cfg=model_cfg, device=device,
                )  # fmt: skip
            r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / peak
            result["variants"][variant] = r
            print(f"{name}  {variant:16s} {r['tokens_per_s']:>10,.0f} tok/s  MFU {r['mfu']:.1%}",
                  flush=True)  # fmt: skip
    print(json.dumps(result, indent=2))
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
