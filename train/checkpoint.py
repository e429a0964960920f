"""Checkpoints with torch.distributed.checkpoint (DCP): sharded, reshardable, verifiable.

Layout of ``<out>/checkpoints/step-00000100/``:

- DCP files (``.metadata``, ``__<rank>_0.distcp``): model and optimizer state, saved by every
  rank for its own shards; DCP reshards on load, so a checkpoint written by 2 ranks loads
  into 1 and the other way round;
- ``rng-rank<r>.pt``: each rank's RNG states (torch CPU/CUDA, numpy, python);
- ``meta.json`` (written last, by rank 0): trainer state (step, tokens, data position,
  scheduler position), the model config, what the shards were (vocab, seq_len, tokenizer
  hash), and the size and sha256 of every file above.

A checkpoint is written to ``step-N.tmp/`` and renamed when complete, so a crash while saving
never leaves a half checkpoint under a real name. On load, every file listed in ``meta.json``
is checked (present, size, sha256) before DCP reads it: a truncated or corrupt file gives a
``CheckpointError`` naming that file rather than an unpickling error from deep inside DCP.
Verification assumes a filesystem shared by all ranks (as multi-node DCP does anyway).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from train.parallel import barrier

META_NAME = "meta.json"
STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not fit this run."""


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _quiet_single_process():
    """DCP warns that it 'assumes a single process' when no process group exists: expected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints (a ``meta.json`` exists) under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / META_NAME).exists()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    rank: int = 0,
    verify_hash: bool = True,
    keep: int = 0,
    protect: set[int] | None = None,
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory.

    ``keep > 0`` keeps only the newest ``keep`` checkpoints (plus the steps in ``protect``).
    """
    final = step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with _quiet_single_process():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save(_rng_state(), tmp / f"rng-rank{rank}.pt")
    barrier()
    if rank == 0:
        files = {}
        for p in sorted(tmp.iterdir()):
            if p.is_file():
                files[p.name] = {
                    "bytes": p.stat().st_size,
                    "sha256": _sha256(p) if verify_hash else None,
                }
        record = {**meta, "step": step, "files": files}
        (tmp / META_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if keep > 0:
            older = [p for p in list_checkpoints(root) if p != final]
            protected = {step_dir(root, s) for s in (protect or set())}
            for p in older[: max(0, len(older) - (keep - 1))]:
                if p not in protected:
                    shutil.rmtree(p, ignore_errors=True)
    barrier()
    return final


def read_meta(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / META_NAME
    if not meta_path.exists():
        raise CheckpointError(f"{meta_path}: missing (incomplete checkpoint?)")
    try:
        return json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON: {e}") from e


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check every listed file (present, size, sha256); return meta. Raises CheckpointError."""
    path = Path(path)
    meta = read_meta(path)
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path / META_NAME}: lists no files")
    for name, info in files.items():
        f = path / name
        if not f.exists():
            raise CheckpointError(f"{f}: missing from checkpoint")
        size = f.stat().st_size
        if size != info["bytes"]:
            raise CheckpointError(
                f"{f}: {size} bytes, expected {info['bytes']} (truncated or overwritten)"
            )
        if info.get("sha256") and _sha256(f) != info["sha256"]:
            raise CheckpointError(f"{f}: sha256 mismatch (corrupt)")
    return meta


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, rank: int = 0
) -> dict[str, Any]:
    """Collective: verify, load model + optimizer (resharding as needed) and RNG; return meta."""
    path = Path(path)
    meta = verify_checkpoint(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    try:
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=str(path))
    except Exception as e:  # DCP wraps per-rank failures; name the checkpoint at least
        raise CheckpointError(f"{path}: DCP could not load it: {e}") from e
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    rng_file = path / f"rng-rank{rank}.pt"
    if not rng_file.exists():  # saved with fewer ranks: reuse rank 0's streams
        rng_file = path / "rng-rank0.pt"
    try:
        _set_rng_state(torch.load(rng_file, weights_only=False))
    except Exception as e:
        raise CheckpointError(f"{rng_file}: unreadable RNG state: {e}") from e
    return meta
