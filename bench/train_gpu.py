"""GPT-2-124M-shape training throughput on one GPU: plain PyTorch vs Sluice trainer vs FSDP2,
plus a bf16 loss-parity check of the trainer with and without FSDP2.

For a machine with a CUDA GPU; ``bench/gpu/run.sh`` runs it there (``--cpu-smoke`` runs the
same code paths tiny on CPU: its numbers mean nothing). Variants, each run ``--repeats`` times
(the first warms the compile caches; the table reports the last):

1. ``plain``: the naive single-GPU baseline of ARCHITECTURE.md: the same ``train.model.GPT``,
   whole-model ``torch.compile``, bf16 autocast, fused AdamW, random batches from a GPU tensor;
2. ``sluice``: ``train.trainer.train`` (per-block + head compile, bf16 autocast, fused AdamW,
   memory-mapped loader thread with pinned memory, NaN check at log steps, logging);
3. ``sluice_fsdp_w1``: the same with FSDP2 at world size 1 (bf16 params, fp32 reduce).

Model: Llama-style GPT-2-small shape (12 x 768, 12 heads, SwiGLU 2048, tied, vocab 50304),
seq 1024, micro-batch 32. Data: shards built from data/sample with the real tokenizer trainer
and shard writer (vocab 8192 < 50304: ids fit). Throughput is measured after ``--warmup``
steps (compilation), in the trainer from its own metrics windows (eval/checkpoint excluded).
MFU = tokens/s x FLOPs/token / peak, FLOPs/token = ``GPT.flops_per_token`` (6N + 12LHQT, N =
non-embedding + LM head), peak from ``train.trainer.GPU_PEAK_BF16`` by device name. Peak
memory: ``torch.cuda.max_memory_allocated`` per variant. SDPA: the kernel the dispatcher picks
for the model's attention, and whether it runs under ``sdpa_kernel(FLASH_ATTENTION)``.

Parity (``--parity-steps N``): ``train()`` with and without FSDP2 on the same data, bf16, per-step
train losses compared. Tolerance ``--parity-rtol`` (default 2%): bf16 keeps 8 significant bits
(one rounding is 0.4%), and the two runs round differently: autocast keeps fp32 weights and an
fp32 residual stream, FSDP2 computes with bf16 copies of the weights and a bf16 residual stream;
the difference then grows with the steps as any two chaotic trajectories do.

    python bench/train_gpu.py --steps 50 --warmup 20 --json $OUT/train_gpu.json
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
from train.model import GPT, GPTConfig, forced_flash_check, sdpa_backend  # noqa: E402
from train.trainer import TrainConfig, peak_flops, set_matmul_precision, train  # noqa: E402

MODEL = GPTConfig(
    vocab_size=50304, seq_len=1024, n_layer=12, n_head=12, d_model=768, ffn_hidden=2048
)
# --cpu-smoke: the same code paths on CPU with a tiny model (no compile unless --compile), to
# check the script itself on a machine without a GPU. Its numbers mean nothing.
SMOKE = GPTConfig(vocab_size=1024, seq_len=64, n_layer=2, n_head=4, n_kv_head=2, d_model=64)
VARIANTS = ["plain", "sluice", "sluice_fsdp_w1"]


def reset() -> None:
    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def plain(
    shards: Path,
    batch: int,
    steps: int,
    warmup: int,
    model_cfg: GPTConfig,
    device: torch.device,
    compile: bool,
    bf16: bool,
) -> dict:
    cuda = device.type == "cuda"
    split = ShardSplit(shards, "train")
    rows = torch.from_numpy(split.rows(np.arange(split.num_rows))).to(device)
    torch.manual_seed(0)
    model = GPT(model_cfg).to(device)
    flops = model.flops_per_token()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), fused=cuda)
    step_fn = torch.compile(model) if compile else model
    g = torch.Generator(device=device).manual_seed(0)
    t0 = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            t0 = time.perf_counter()
        batch_rows = rows[torch.randint(0, len(rows), (batch,), device=device, generator=g)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = step_fn(batch_rows[:, :-1], batch_rows[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    tps = steps * batch * model_cfg.seq_len / (time.perf_counter() - t0)
    out = {
        "tokens_per_s": tps,
        "flops_per_token": flops,
        "final_loss": float(loss.detach()),
        "peak_memory_gib": peak_memory_gib(device),
    }
    del model, opt, step_fn, rows
    reset()
    return out


def trainer_config(
    model_cfg: GPTConfig,
    steps: int,
    batch: int,
    log_every: int,
    device: torch.device,
    compile: bool,
    bf16: bool,
    fsdp: bool,
) -> TrainConfig:
    return TrainConfig(
        model=model_cfg,
        steps=steps,
        micro_batch_size=batch,
        lr=6e-4,
        warmup_steps=10,
        log_every=log_every,
        eval_every=0,
        eval_sequences=64,
        checkpoint_every=0,
        checkpoint_hash=False,
        compile=compile,
        precision="bf16" if bf16 else "fp32",
        device=device.type,
        fsdp=fsdp,
        reshard_after_forward=False,
        tensorboard=False,
    )


def sluice(
    shards: Path,
    out: Path,
    batch: int,
    steps: int,
    warmup: int,
    fsdp: bool,
    model_cfg: GPTConfig,
    device: torch.device,
    compile: bool,
    bf16: bool,
) -> dict:
    log_every = 10
    warmup = log_every * max(1, -(-warmup // log_every))  # whole windows
    steps = log_every * max(1, -(-steps // log_every))
    cfg = trainer_config(model_cfg, warmup + steps, batch, log_every, device, compile, bf16, fsdp)
    final = train(cfg, shards, out, resume=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if r["step"] > warmup]
    window = log_every * batch * model_cfg.seq_len
    tps = window * len(timed) / sum(window / r["tokens_per_s"] for r in timed)
    result = {
        "tokens_per_s": tps,
        "flops_per_token": final["flops_per_token"],
        "final_loss": final["final_train_loss"],
        "stall_frac": float(np.mean([r["stall_frac"] for r in timed])),
        "peak_memory_gib": peak_memory_gib(device),
        "sdpa_backend": final["sdpa_backend"],
        "fsdp": final["fsdp"],
    }
    reset()
    return result


def parity(
    shards: Path,
    tmp: Path,
    steps: int,
    batch: int,
    model_cfg: GPTConfig,
    device: torch.device,
    compile: bool,
    bf16: bool,
    rtol: float,
) -> dict:
    """Per-step train losses of train() without and with FSDP2 (same data, same init)."""
    losses = {}
    for name, fsdp in (("plain", False), ("fsdp", True)):
        cfg = trainer_config(model_cfg, steps, batch, 1, device, compile, bf16, fsdp)
        out = tmp / f"parity-{name}"
        train(cfg, shards, out, resume=False)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["train_loss"] for r in rows]
        reset()
    a, b = np.array(losses["plain"]), np.array(losses["fsdp"])
    rel = np.abs(a - b) / np.abs(a)
    return {
        "steps": steps,
        "precision": "bf16" if bf16 else "fp32",
        "rtol": rtol,
        "max_rel_diff": float(rel.max()),
        "mean_rel_diff": float(rel.mean()),
        "worst_step": int(rel.argmax()) + 1,
        "first_loss": [float(a[0]), float(b[0])],
        "last_loss": [float(a[-1]), float(b[-1])],
        "passed": bool(np.isfinite(rel).all() and rel.max() <= rtol),
        "losses": losses,
    }


def markdown(result: dict) -> str:
    """The table run.sh shows: one row per variant (last repeat), plus SDPA and parity."""
    lines = [
        f"### Training throughput: {result['device_name']} (torch {result['torch']})\n",
        f"GPT shape {result['model']['n_layer']}x{result['model']['d_model']}, batch "
        f"{result['batch']} x seq {result['model']['seq_len']}, {result['precision']}, compile "
        f"{result['compile']}; {result['steps_timed']} timed steps after {result['warmup_steps']}"
        f" warmup, each variant run {result['repeats']}x (table: the last run; all in JSON). "
        f"Peak {result['peak_flops'] / 1e12:.0f} TFLOP/s ({result['peak_source']}).\n",
        "| variant | tokens/s | MFU | peak memory (GiB) | SDPA backend | runs (tok/s) |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, runs in result["variants"].items():
        r = runs[-1]
        mem = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f}"
        all_runs = ", ".join(f"{x['tokens_per_s']:,.0f}" for x in runs)
        lines.append(
            f"| {name} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {mem} | "
            f"{r.get('sdpa_backend', result['sdpa']['backend'])} | {all_runs} |"
        )
    if "fsdp_overhead" in result:
        lines.append(
            f"\nFSDP2 overhead at world size 1: {result['fsdp_overhead']:+.1%} (goal ≤ 5%)"
        )
    s = result["sdpa"]
    flash = "ran" if s["forced_flash_error"] is None else f"FAILED: {s['forced_flash_error']}"
    lines.append(f"\nSDPA: dispatcher picks {s['backend']}; forced flash: {flash}")
    if "parity" in result:
        p = result["parity"]
        lines.append(
            f"\nParity ({p['precision']}, {p['steps']} steps, train() vs train(fsdp=true)): max "
            f"rel. loss difference {p['max_rel_diff']:.2%} (step {p['worst_step']}), mean "
            f"{p['mean_rel_diff']:.2%}, tolerance {p['rtol']:.1%}: "
            f"{'PASS' if p['passed'] else 'FAIL'}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps (compilation)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="runs per variant (first warms)")
    ap.add_argument("--shard-mb", type=float, default=4.0, help="sample text for the shards")
    ap.add_argument("--only", nargs="*", default=VARIANTS, choices=VARIANTS)
    ap.add_argument("--parity-steps", type=int, default=0, help="0: no parity check")
    ap.add_argument("--parity-rtol", type=float, default=0.02)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "train_gpu.json")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    ap.add_argument("--cpu-smoke", action="store_true", help="check the script on CPU (tiny)")
    ap.add_argument("--compile", action="store_true", help="--cpu-smoke: compile as on GPU")
    ap.add_argument("--bf16", action="store_true", help="--cpu-smoke: bf16 as on GPU")
    args = ap.parse_args(argv)
    model_cfg, vocab = (SMOKE, 1024) if args.cpu_smoke else (MODEL, 8192)
    if args.cpu_smoke:
        device, name = torch.device("cpu"), "cpu (smoke run: numbers mean nothing)"
        compile, bf16 = args.compile, args.bf16
    elif not torch.cuda.is_available():
        sys.exit("bench/train_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    else:
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
        compile, bf16 = True, True
    set_matmul_precision(device)
    peak, peak_source = peak_flops(device)
    dtype = torch.bfloat16 if bf16 else torch.float32
    result: dict = {
        "device_name": name,
        "torch": torch.__version__,
        "peak_flops": peak,
        "peak_source": peak_source,
        "model": model_cfg.model_dump(),
        "batch": args.batch,
        "precision": "bf16" if bf16 else "fp32",
        "compile": compile,
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "repeats": args.repeats,
        "sdpa": {
            "backend": sdpa_backend(model_cfg, args.batch, device, dtype),
            "forced_flash_error": forced_flash_check(model_cfg, args.batch, device, dtype),
        },
        "variants": {},
    }
    print(f"SDPA: {result['sdpa']}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every run: a run stopped at its time limit keeps what it did
        args.json.write_text(json.dumps(result, indent=2) + "\n")

    save()
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        t0 = time.perf_counter()
        mb = int(args.shard_mb * 1e6)
        build_shards(shards, seq_len=model_cfg.seq_len, vocab=vocab, max_bytes=mb)
        result["shard_build_s"] = time.perf_counter() - t0
        for variant in args.only:
            runs = []
            for repeat in range(args.repeats):
                if variant == "plain":
                    r = plain(shards, args.batch, args.steps, args.warmup, model_cfg, device,
                              compile, bf16)  # fmt: skip
                else:
                    r = sluice(
                        shards, Path(tmp) / f"{variant}-{repeat}", args.batch, args.steps,
                        args.warmup, fsdp=variant == "sluice_fsdp_w1", model_cfg=model_cfg,
                        device=device, compile=compile, bf16=bf16,
                    )  # fmt: skip
                r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / peak
                runs.append(r)
                result["variants"][variant] = runs
                save()
                print(f"{name}  {variant:16s} run {repeat + 1}: {r['tokens_per_s']:>10,.0f} tok/s"
                      f"  MFU {r['mfu']:.1%}", flush=True)  # fmt: skip
            result["variants"][variant] = runs
        v = result["variants"]
        if "sluice" in v and "sluice_fsdp_w1" in v:
            base, fsdp = v["sluice"][-1]["tokens_per_s"], v["sluice_fsdp_w1"][-1]["tokens_per_s"]
            result["fsdp_overhead"] = (base - fsdp) / base
        if args.parity_steps > 0:
            result["parity"] = parity(shards, Path(tmp), args.parity_steps, args.batch,
                                      model_cfg, device, compile, bf16, args.parity_rtol)  # fmt: skip
    table = markdown(result)
    print(table, flush=True)
    save()
    if args.markdown:
        args.markdown.write_text(table)
    return result


if __name__ == "__main__":
    main()
