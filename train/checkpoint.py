"""Checkpoints with torch.distributed.checkpoint (DCP): sharded, reshardable, verifiable.

Layout of ``<out>/checkpoints/step-00000100/``:

- DCP files (``.metadata``, ``__<rank>_0.distcp``): model and optimizer state, saved by every
  rank for its own shards; DCP reshards on load, so a checkpoint written by 2 ranks loads
  into 1 and the other way round;
- ``rng-rank<r>.pt``: each rank's RNG states (torch CPU/CUDA, numpy, python), as tensors and
  numbers only;
- ``meta.json`` (written last, by rank 0): trainer state (step, tokens, data position,
  scheduler position), the model config, what the shards were (vocab, seq_len, tokenizer
  hash), and the size and sha256 of every file above.

A checkpoint is written to ``step-N.tmp/`` and renamed when complete, so a crash while saving
never leaves a half checkpoint under a real name. Each rank hashes the files it wrote (in
parallel; rank 0 merges the lists). On load, every file listed in ``meta.json`` is checked
(present, size on every rank; sha256 split across the ranks) before DCP reads it: a truncated
or corrupt file gives a ``CheckpointError`` naming that file rather than an unpickling error
from deep inside DCP. Verification assumes a filesystem shared by all ranks (as multi-node DCP
does anyway).

Nothing loaded from a checkpoint can run code: RNG states are read with
``torch.load(weights_only=True)``; DCP's ``.metadata`` (a pickle) is read by an unpickler that
admits only DCP's metadata classes, and its non-tensor items (optimizer hyper-parameters) with
``weights_only=True`` too. A planted pickle is a ``CheckpointError``, never executed.
``async_save=True`` writes with ``dcp.async_save``: training continues while the files are
written, and ``PendingCheckpoint.finish()`` (collective) completes the checkpoint.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from train.parallel import all_reduce_min, barrier, rank_and_world

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
    """All RNG states as tensors and plain numbers: loadable with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(gauss),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- safe loading

_DCP_CLASSES = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Admits DCP's metadata classes, torch.Size and dtypes; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == dcp_metadata.__name__ and isinstance(getattr(dcp_metadata, name, None), type):
            return getattr(dcp_metadata, name)
        if (module, name) in _DCP_CLASSES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name} (not DCP metadata)")


class SafeFileSystemReader(FileSystemReader):
    """DCP's reader, with ``.metadata`` unpickled by ``_MetadataUnpickler``."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        rank = kwargs.get("rank")
        path = self._get_metadata_path(rank)
        with self.fs.create_stream(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if not isinstance(metadata, dcp_metadata.Metadata):
            raise pickle.UnpicklingError(f"{path}: not DCP metadata ({type(metadata).__name__})")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's planner, with non-tensor items read by ``torch.load(weights_only=True)``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


# --------------------------------------------------------------------------- saving


def _own_files(tmp: Path, rank: int) -> list[Path]:
    """The files this rank wrote into a checkpoint (rank 0 also DCP's ``.metadata``)."""
    mine = re.compile(rf"^__{rank}_\d+\.distcp$|^rng-rank{rank}\.pt$")
    return [
        p
        for p in sorted(tmp.iterdir())
        if p.is_file() and (mine.match(p.name) or (rank == 0 and p.name == ".metadata"))
    ]


def _file_record(p: Path, verify_hash: bool) -> dict[str, Any]:
    return {"bytes": p.stat().st_size, "sha256": _sha256(p) if verify_hash else None}


_ASYNC_GROUP: Any = None


def _async_group() -> Any:
    """A gloo group of its own for async saves (collective on first use; None: no dist)."""
    global _ASYNC_GROUP
    if _ASYNC_GROUP is None and dist.is_available() and dist.is_initialized():
        _ASYNC_GROUP = dist.new_group(backend="gloo")
    return _ASYNC_GROUP


class PendingCheckpoint:
    """An async save in flight; ``finish()`` (collective) waits for it and completes it."""

    def __init__(self, future: Any, complete: Any, path: Path):
        self.future, self._complete, self.path = future, complete, path

    def finish(self) -> Path:
        self.future.result()
        return self._complete()


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
    async_save: bool = False,
) -> Path | PendingCheckpoint:
    """Collective: every rank calls it. Returns the final checkpoint directory, or with
    ``async_save`` a ``PendingCheckpoint`` whose ``finish()`` every rank calls later.

    ``keep > 0`` keeps only the newest ``keep`` checkpoints (plus the steps in ``protect``).
    """
    final = step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    torch.save(_rng_state(), tmp / f"rng-rank{rank}.pt")
    state = {"model": model_sd, "optim": optim_sd}

    def complete() -> Path:
        return _complete_checkpoint(root, tmp, final, step, meta, rank, verify_hash, keep, protect)

    with _quiet_single_process():
        if async_save:
            group = _async_group()
            future = dcp.async_save(state, checkpoint_id=str(tmp), process_group=group)
            return PendingCheckpoint(future, complete, final)
        dcp.save(state, checkpoint_id=str(tmp))
    return complete()


def _complete_checkpoint(
    root: str | Path,
    tmp: Path,
    final: Path,
    step: int,
    meta: dict[str, Any],
    rank: int,
    verify_hash: bool,
    keep: int,
    protect: set[int] | None,
) -> Path:
    """Collective: every rank hashes its own files; rank 0 writes meta.json and renames."""
    barrier()  # DCP's .metadata (rank 0) exists once every rank is through its save
    own = {p.name: _file_record(p, verify_hash) for p in _own_files(tmp, rank)}
    (tmp / f"files-rank{rank}.json").write_text(json.dumps(own))
    barrier()
    if rank == 0:
        files: dict[str, Any] = {}
        for listing in sorted(tmp.glob("files-rank*.json")):
            files.update(json.loads(listing.read_text()))
            listing.unlink()
        for p in sorted(tmp.iterdir()):  # anything no rank claimed (none expected)
            if p.is_file() and p.name not in files:
                files[p.name] = _file_record(p, verify_hash)
        record = {**meta, "step": step, "files": dict(sorted(files.items()))}
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
    """Check every listed file (present, size, sha256); return meta. Raises CheckpointError.

    Collective under torch.distributed: every rank checks presence and sizes (cheap), the
    hashes are split across the ranks (file i by rank i mod W), and every rank learns of the
    first bad file (one all-reduce), so all raise the same error.
    """
    path = Path(path)
    meta = read_meta(path)
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path / META_NAME}: lists no files")
    rank, world = rank_and_world()
    names = sorted(files)
    problems: dict[int, str] = {}
    for i, name in enumerate(names):
        f, info = path / name, files[name]
        if not f.exists():
            problems[i] = f"{f}: missing from checkpoint"
        elif (size := f.stat().st_size) != info["bytes"]:
            problems[i] = f"{f}: {size} bytes, expected {info['bytes']} (truncated or overwritten)"
        elif i % world == rank and info.get("sha256") and _sha256(f) != info["sha256"]:
            problems[i] = f"{f}: sha256 mismatch (corrupt)"
    first = all_reduce_min(min(problems, default=len(names)))
    if first < len(names):
        default = f"{path / names[first]}: sha256 mismatch (corrupt; found by another rank)"
        raise CheckpointError(problems.get(first, default))
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
            dcp.load(
                state,
                storage_reader=SafeFileSystemReader(str(path)),
                planner=SafeLoadPlanner(),
            )
    except (Exception, CheckpointException) as e:  # DCP wraps per-rank failures (a
        # BaseException); name the checkpoint at least
        raise CheckpointError(f"{path}: DCP could not load it: {e}") from e
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    rng_file = path / f"rng-rank{rank}.pt"
    if not rng_file.exists():  # saved with fewer ranks: reuse rank 0's streams
        rng_file = path / "rng-rank0.pt"
    try:
        _set_rng_state(torch.load(rng_file, weights_only=True))
    except Exception as e:
        raise CheckpointError(f"{rng_file}: unreadable RNG state: {e}") from e
    return meta
