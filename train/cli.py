"""``sluice train``: run the trainer in-process, or under torchrun for several processes/nodes.

    sluice train --config configs/train/tiny.yaml --shards <dir> --out <dir>
                 [--nproc N] [--nnodes M --node-rank R --master-addr HOST --master-port P]
                 [--set key=value ...] [--no-resume]

With ``--nproc 1`` and one node the run happens in this process. Otherwise this command
re-executes itself under ``python -m torch.distributed.run`` (torchrun) with the same arguments;
each worker sees RANK/WORLD_SIZE in its environment and trains its part with FSDP2.
``flows/cli.py`` forwards its argv here (with or without the leading ``train``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from train.trainer import TrainConfig, train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluice train", description="Pretrain a GPT on token shards")
    p.add_argument("--config", required=True, help="YAML TrainConfig (configs/train/*.yaml)")
    p.add_argument("--shards", required=True, help="directory with manifest.json")
    p.add_argument("--out", required=True, help="run directory (resumed if it has checkpoints)")
    p.add_argument("--nproc", type=int, default=1, help="processes per node (GPUs per node)")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=29500)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (dotted for nested: model.n_layer=4); repeatable",
    )
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    return p


def torchrun_command(args: argparse.Namespace) -> list[str]:
    """The torchrun command line that runs this module on every process of this node."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={args.nproc}"]
    if args.nnodes == 1:
        cmd += [
            "--nnodes=1",
            f"--master-addr={args.master_addr}",
            f"--master-port={args.master_port}",
        ]
    else:
        cmd += [
            f"--nnodes={args.nnodes}",
            f"--node-rank={args.node_rank}",
            f"--master-addr={args.master_addr}",
            f"--master-port={args.master_port}",
        ]
    return [*cmd, "-m", "train.cli", *worker_argv(args)]


def worker_argv(args: argparse.Namespace) -> list[str]:
    """What each worker gets: the run's arguments without the launch ones (torchrun would
    otherwise read ``--nproc`` as an abbreviation of its own ``--nproc-per-node``)."""
    out = ["--config", args.config, "--shards", args.shards, "--out", args.out]
    for item in args.overrides:
        out += ["--set", item]
    return [*out, "--no-resume"] if args.no_resume else out


def shards_problem(shards: str) -> str | None:
    """Why ``--shards`` is not a shard directory (no manifest.json; a run directory gets the
    hint to its ``shards/``); None when it is one."""
    from curate.storage import exists, join

    if exists(join(shards, "manifest.json")):
        return None
    if exists(join(shards, "shards", "manifest.json")):
        hint = f"; did you mean --shards {join(shards, 'shards')}?"
    else:
        hint = " (a run's shards are RUN/shards, written by `sluice run`)"
    return f"--shards {shards}: not a shard directory (no manifest.json){hint}"


def main(argv: list[str] | None = None) -> int:
    from curate.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        argv = argv[1:]
    p = parser()
    if len(argv) == 1 and not argv[0].startswith("-"):  # `sluice train runs/demo`
        argv = ["--shards", argv[0]]
        problem = shards_problem(argv[1])
        p.exit(
            2,
            f"sluice train: error: {problem or 'the options are missing'}; usage: "
            "sluice train --config configs/train/tiny.yaml --shards RUN/shards --out DIR\n",
        )
    args = p.parse_args(argv)
    try:
        cfg = TrainConfig.from_yaml(args.config, args.overrides)
    except ConfigError as e:
        p.exit(2, f"sluice train: error: {e}\n")
    problem = shards_problem(args.shards)
    if problem:
        p.exit(2, f"sluice train: error: {problem}\n")
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ
    if (args.nproc > 1 or args.nnodes > 1) and not under_torchrun:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        return subprocess.call(torchrun_command(args), env=env)
    final = train(cfg, args.shards, args.out, resume=not args.no_resume)
    if int(os.environ.get("RANK", "0")) == 0:
        keys = ("final_val_loss", "steps", "tokens", "params", "tokens_per_s", "mfu")
        print(json.dumps({k: final[k] for k in keys}))
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort at exit
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
