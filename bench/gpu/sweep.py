"""The scaling sweep of ``bench/gpu/run.sh``: shards from data/sample, the sweep under a time
limit, then the fit and the held-out prediction error of whatever runs finished.

``run.sh`` stops it with SIGINT at its time limit (``timeout --signal=INT``): the run in
progress is abandoned, and the fit and held-out check still run over the finished ones
(``train/sweep_cli.summarize``; the held-out check is skipped if the held-out run did not
finish). ``--dry-run``: configs/sweep/tiny.yaml with 40x smaller token budgets, on CPU.

    python bench/gpu/sweep.py --config configs/sweep/gpu.yaml --out /tmp/sweep
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:] = [str(ROOT)] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent
]

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import yaml  # noqa: E402

from tests.train_fixtures import build_shards  # noqa: E402
from train.sweep import SweepConfig, collect_sweep, run_sweep  # noqa: E402
from train.sweep_cli import summarize  # noqa: E402

TINY = ROOT / "configs" / "sweep" / "tiny.yaml"
DRY_RUN_SCALE = 40  # the dry run's budgets: tiny.yaml's / this (a few hundred steps in all)


def dry_run_config() -> SweepConfig:
    """configs/sweep/tiny.yaml with every token budget and the fit's step minimum divided by
    ``DRY_RUN_SCALE`` (a minute or two on CPU)."""
    cfg = SweepConfig.from_yaml(TINY)
    holdout = cfg.holdout.model_copy(update={"tokens": cfg.holdout.tokens // DRY_RUN_SCALE})
    models = [
        m.model_copy(update={"tokens": [t // DRY_RUN_SCALE for t in m.tokens]}) if m.tokens else m
        for m in cfg.models
    ]
    return cfg.model_copy(
        update={
            "tokens": [t // DRY_RUN_SCALE for t in cfg.tokens],
            "models": models,
            "fit_min_steps": cfg.fit_min_steps // DRY_RUN_SCALE,
            "holdout": holdout,
            "set": [*cfg.set, "warmup_steps=2", "log_every=4"],
        }
    )


def shard_shape(cfg: SweepConfig, seq_len: int, vocab: int) -> tuple[int, int]:
    """(seq_len, vocab) for the shards: the sweep's or its base config's, else the defaults."""
    base = yaml.safe_load(Path(cfg.base).read_text()) or {}
    model = base.get("model") or {}
    return cfg.seq_len or model.get("seq_len") or seq_len, model.get("vocab_size") or vocab


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/sweep/gpu.yaml")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--seq-len", type=int, default=256, help="if neither config sets it")
    ap.add_argument("--vocab", type=int, default=4096, help="if the base config does not set it")
    ap.add_argument("--shard-mb", type=float, default=4.0)
    ap.add_argument("--bootstrap", type=int, default=50)
    args = ap.parse_args(argv)
    cfg = dry_run_config() if args.dry_run else SweepConfig.from_yaml(args.config)
    seq_len, vocab = (64, 1024) if args.dry_run else shard_shape(cfg, args.seq_len, args.vocab)
    mb = 0.4 if args.dry_run else args.shard_mb
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shards = out / "shards"
    if not (shards / "manifest.json").exists():
        build_shards(shards, seq_len=seq_len, vocab=vocab, max_bytes=int(mb * 1e6))
    print(f"shards (seq_len {seq_len}, vocab {vocab}) in {time.perf_counter() - t0:.0f} s")
    stopped = False
    try:
        table = run_sweep(cfg, shards, out)
    except KeyboardInterrupt:  # the time limit: fit what finished
        stopped = True
        print("time limit: the run in progress is abandoned", flush=True)
        table = collect_sweep(out)
    print(f"{table.num_rows} finished points in {time.perf_counter() - t0:.0f} s")
    if table.num_rows == 0:
        return 1
    try:
        summary = summarize(table, out, n_bootstrap=args.bootstrap)
    except ValueError as e:  # too few points for five parameters
        print(f"cannot fit: {e}")
        return 1
    summary["stopped_at_time_limit"] = stopped
    summary["wall_s"] = time.perf_counter() - t0
    (out / "sweep_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print((out / "sweep.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
