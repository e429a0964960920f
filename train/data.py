"""Memory-mapped loader of packed token shards (``curate/shards/format.py``).

Every shard file is memory-mapped (zero-copy): a batch copies only its own rows. Each row holds
``seq_len + 1`` tokens; inputs are ``row[:-1]`` and targets ``row[1:]``.

Order is pure arithmetic, so it needs no state beyond the step number:

- the train split is one index space ``0..S-1`` (files in manifest order);
- epoch ``e`` visits it in the permutation ``default_rng([seed, e]).permutation(S)``;
- the stream position of sequence ``j`` of micro-step ``m`` of rank ``r`` at optimizer step
  ``s`` is ``p = p0 + (s - s0)·G + (m·W + r)·B + j`` with ``G = B·W·A`` sequences per step
  (B micro batch, W world size, A grad-accumulation steps) and ``p0`` the number of sequences
  consumed before step ``s0`` (``s0·G`` for a fresh run); ``p`` is ``perm_{p // S}[p % S]``.

So ranks read disjoint rows, a run resumed at step ``s`` reads exactly what an uninterrupted
run would have read from step ``s`` on (also with another world size or batch: the checkpoint
keeps the position ``p0``, not just the step), and one process with A=2 sees the same global
batch as two processes with A=1. A background thread prepares the next batches (pinned memory on CUDA,
copied with ``non_blocking``); the time the training loop waits for it is the *stall*.

Nothing corrupt is trusted: on open, every shard file's sha256 is checked against the manifest
(once per file and process: a file already verified, unchanged in size and mtime, is not
hashed again) and every token id is checked < the tokenizer's vocab_size
(``TokenRangeError`` naming the file, row and id, rather than an ``IndexError`` in torch).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from curate.shards.format import (
    Manifest,
    ShardFormatError,
    check_shard,
    load_manifest,
    open_shard,
    sha256_file,
)


class ShardCorruptError(ShardFormatError):
    """A shard file's bytes differ from the sha256 its manifest recorded."""


class TokenRangeError(ShardFormatError):
    """A shard holds a token id >= the tokenizer's vocab_size."""


# (path, size, mtime_ns, expected sha256) of files verified in this process
_VERIFIED: set[tuple[str, int, int, str]] = set()


def verify_shard_file(path: Path, expected_sha256: str) -> None:
    """Raise ShardCorruptError unless the file hashes to ``expected_sha256`` (once per file)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected_sha256)
    if key in _VERIFIED:
        return
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ShardCorruptError(
            f"{path}: sha256 {actual[:12]}… differs from the manifest's {expected_sha256[:12]}… "
            "(corrupt or replaced shard; rebuild the shards)"
        )
    _VERIFIED.add(key)


def check_token_range(rows: np.ndarray, vocab_size: int, path: Path, first_row: int = 0) -> None:
    """Raise TokenRangeError if any id in ``rows`` [n, seq_len + 1] is >= ``vocab_size``."""
    if rows.size == 0:
        return
    top = int(rows.max())
    if top >= vocab_size:
        row = int(np.argmax((rows >= vocab_size).any(axis=1)))
        raise TokenRangeError(
            f"{path}: row {first_row + row} holds token id {top} >= tokenizer vocab_size "
            f"{vocab_size} (corrupt shard, or shards of another tokenizer)"
        )


class ShardSplit:
    """All rows of one split as memory-mapped [n, seq_len + 1] numpy views.

    ``verify``: check each file's sha256 against the manifest before use (see module doc).
    """

    def __init__(
        self,
        shards_dir: str | Path,
        split: str,
        manifest: Manifest | None = None,
        verify: bool = True,
    ):
        self.dir = Path(shards_dir)
        self.manifest = manifest or load_manifest(self.dir)
        if split not in self.manifest.splits:
            raise ShardFormatError(f"{self.dir}: manifest has no {split!r} split")
        self.split = split
        width = self.manifest.seq_len + 1
        self.chunks: list[np.ndarray] = []
        self.tables = []  # keep the mapped tables alive as long as their numpy views
        for f in self.manifest.splits[split].files:
            path = self.dir / f.path
            if not path.exists():
                raise ShardFormatError(f"{path}: shard listed in the manifest is missing")
            if verify:
                verify_shard_file(path, f.sha256)
            table = open_shard(path)
            check_shard(table, self.manifest, path)
            if table.num_rows != f.sequences:
                raise ShardFormatError(
                    f"{path}: {table.num_rows} sequences, manifest says {f.sequences}"
                )
            self.tables.append(table)
            first_row = 0
            for chunk in table.column("input_ids").chunks:
                if len(chunk):
                    values = chunk.values.to_numpy(zero_copy_only=True)
                    start = chunk.offset * width
                    rows = values[start : start + len(chunk) * width].reshape(-1, width)
                    check_token_range(rows, self.manifest.tokenizer.vocab_size, path, first_row)
                    self.chunks.append(rows)
                    first_row += len(rows)
        sizes = [len(c) for c in self.chunks]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_rows = int(self.starts[-1])
        if self.num_rows == 0:
            raise ShardFormatError(f"{self.dir}: split {split!r} has no sequences")

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Copy rows by global index into one [len(index), seq_len + 1] int64 array."""
        out = np.empty((len(index), self.manifest.seq_len + 1), dtype=np.int64)
        which = np.searchsorted(self.starts, index, side="right") - 1
        for k, (c, i) in enumerate(zip(which, index, strict=True)):
            out[k] = self.chunks[c][i - self.starts[c]]
        return out


class TrainLoader:
    """Deterministic, rank-disjoint, resumable micro-batches of the train split (see module doc).

    Iterating yields ``(x, y)`` on ``device`` for micro-steps ``(step, 0..A-1)`` of steps
    ``start_step, start_step + 1, ...``. ``stall_s`` accumulates the time ``next()`` waited.
    """

    def __init__(
        self,
        split: ShardSplit,
        micro_batch: int,
        grad_accum: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
        device: torch.device | str = "cpu",
        prefetch: int = 2,
        start_position: int | None = None,
    ):
        self.split, self.B, self.A = split, micro_batch, grad_accum
        self.rank, self.W, self.seed = rank, world_size, seed
        self.step = self.start_step = start_step
        self.start_position = (
            start_step * micro_batch * world_size * grad_accum
            if start_position is None
            else start_position
        )
        self.device = torch.device(device)
        self.prefetch = prefetch
        self.stall_s = 0.0
        self._perm_cache: dict[int, np.ndarray] = {}
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.record: list[dict] | None = None  # set to a list to log the rows consumed

    @property
    def sequences_per_step(self) -> int:
        return self.B * self.W * self.A

    def position(self, step: int) -> int:
        """Sequences of the stream consumed before ``step`` (what a checkpoint keeps)."""
        return self.start_position + (step - self.start_step) * self.sequences_per_step

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            if len(self._perm_cache) > 2:
                self._perm_cache.clear()
            rng = np.random.default_rng([self.seed, epoch])
            self._perm_cache[epoch] = rng.permutation(self.split.num_rows)
        return self._perm_cache[epoch]

    def indices(self, step: int, micro: int) -> np.ndarray:
        """Global row indices this rank reads at (step, micro-step)."""
        S = self.split.num_rows
        first = (
            self.start_position
            + (step - self.start_step) * self.sequences_per_step
            + (micro * self.W + self.rank) * self.B
        )
        pos = np.arange(first, first + self.B, dtype=np.int64)
        out = np.empty_like(pos)
        for epoch in np.unique(pos // S):
            sel = pos // S == epoch
            out[sel] = self._perm(int(epoch))[pos[sel] % S]
        return out

    def _batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        index = self.indices(step, micro)
        rows = self.split.rows(index)
        # contiguous inputs and targets: a pinned, contiguous source is what makes the
        # host-to-device copy truly asynchronous (a strided view would be staged first)
        x = torch.from_numpy(np.ascontiguousarray(rows[:, :-1]))
        y = torch.from_numpy(np.ascontiguousarray(rows[:, 1:]))
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        return x, y, index

    def _produce(self, step: int) -> None:
        assert self._queue is not None
        while not self._stop.is_set():
            for micro in range(self.A):
                item = self._batch(step, micro)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            step += 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.prefetch > 0:
            self._queue = queue.Queue(maxsize=self.prefetch * self.A)
            self._thread = threading.Thread(target=self._produce, args=(self.step,), daemon=True)
            self._thread.start()
        step = self.step
        while True:
            for micro in range(self.A):
                t0 = time.perf_counter()
                x, y, index = (
                    self._queue.get() if self._queue is not None else self._batch(step, micro)
                )
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                self.stall_s += time.perf_counter() - t0
                if self.record is not None:
                    self.record.append({"step": step, "micro": micro, "rows": index.tolist()})
                yield x, y
            step += 1
            self.step = step

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def val_batches(
    split: ShardSplit, sequences: int, batch: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed validation set: the first ``sequences`` rows of the val split (all if 0),
    cut into batches, this rank's share (rows ``rank, rank + W, ...``)."""
    n = split.num_rows if sequences <= 0 else min(sequences, split.num_rows)
    mine = np.arange(rank, n, world_size, dtype=np.int64)
    for a in range(0, len(mine), batch):
        rows = torch.from_numpy(split.rows(mine[a : a + batch]))
        yield rows[:, :-1], rows[:, 1:]
