"""The shard loader on real shards: determinism, rank disjointness, exact resume, val set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.shards.format import ShardFormatError, load_manifest, open_shard
from train.data import ShardSplit, TrainLoader, val_batches


def take(loader: TrainLoader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    it = iter(loader)
    out = [next(it) for _ in range(n)]
    loader.close()
    return out


def test_rows_are_the_shard_rows_and_targets_shift(train_shards):
    split = ShardSplit(train_shards, "train")
    m = load_manifest(train_shards)
    assert split.num_rows == m.splits["train"].sequences
    first = open_shard(train_shards / m.splits["train"].files[1].path)
    k = m.splits["train"].files[0].sequences + 5  # row 5 of the second file
    expect = np.asarray(first.column("input_ids")[5].as_py())
    assert np.array_equal(split.rows(np.array([k]))[0], expect)
    x, y = take(TrainLoader(split, 4, prefetch=0), 1)[0]
    assert x.shape == y.shape == (4, m.seq_len) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])


@pytest.mark.parametrize("prefetch", [0, 2])
def test_order_is_deterministic_and_seeded(train_shards, prefetch):
    split = ShardSplit(train_shards, "train")
    a = take(TrainLoader(split, 4, seed=7, prefetch=prefetch), 5)
    b = take(TrainLoader(split, 4, seed=7, prefetch=0), 5)
    c = take(TrainLoader(split, 4, seed=8, prefetch=0), 5)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], c[0][0])


def test_ranks_read_disjoint_rows_that_cover_the_global_batch(train_shards):
    split = ShardSplit(train_shards, "train")
    W, A, B = 3, 2, 4
    loaders = [TrainLoader(split, B, A, rank=r, world_size=W, seed=1) for r in range(W)]
    single = TrainLoader(split, B, A * W, seed=1)  # one process, same global batch
    for step in range(4):
        per_rank = [np.concatenate([ld.indices(step, m) for m in range(A)]) for ld in loaders]
        seen = np.concatenate(per_rank)
        assert len(np.unique(seen)) == len(seen) == W * A * B
        glob = np.concatenate([single.indices(step, m) for m in range(A * W)])
        assert set(seen.tolist()) == set(glob.tolist())


def test_epoch_visits_every_row_once_then_reshuffles(train_shards):
    split = ShardSplit(train_shards, "train")
    ld = TrainLoader(split, 1, 1, seed=2)
    S = split.num_rows
    first = np.concatenate([ld.indices(s, 0) for s in range(S)])
    second = np.concatenate([ld.indices(s, 0) for s in range(S, 2 * S)])
    assert sorted(first.tolist()) == list(range(S)) == sorted(second.tolist())
    assert not np.array_equal(first, second)


def test_resume_from_step_continues_without_repeats_or_gaps(train_shards):
    split = ShardSplit(train_shards, "train")
    full = take(TrainLoader(split, 4, 2, seed=3), 10 * 2)
    head = take(TrainLoader(split, 4, 2, seed=3), 4 * 2)
    tail = take(TrainLoader(split, 4, 2, seed=3, start_step=4), 6 * 2)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(full, head + tail, strict=True))


def test_val_batches_split_a_fixed_prefix_across_ranks(train_shards):
    val = ShardSplit(train_shards, "val")
    one = torch.cat([x for x, _ in val_batches(val, 20, 8)])
    two = [torch.cat([x for x, _ in val_batches(val, 20, 8, r, 2)]) for r in range(2)]
    assert one.shape[0] == 20
    assert torch.equal(one[0::2], two[0]) and torch.equal(one[1::2], two[1])


def test_missing_or_mismatched_shard_is_a_clear_error(train_shards, tmp_path):
    import shutil

    copy = tmp_path / "s"
    shutil.copytree(train_shards, copy)
    m = load_manifest(copy)
    victim = copy / m.splits["train"].files[0].path
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ShardFormatError, match=victim.name):
        ShardSplit(copy, "train")
    victim.unlink()
    with pytest.raises(ShardFormatError, match="missing"):
        ShardSplit(copy, "train")


def test_resume_with_another_batch_or_world_size_continues_the_stream(train_shards):
    split = ShardSplit(train_shards, "train")
    before = TrainLoader(split, 4, 2, seed=5)  # 8 sequences per step
    seen = np.concatenate([before.indices(s, m) for s in range(3) for m in range(2)])
    pos = before.position(3)
    assert pos == 24
    # resumed at step 3 on 3 ranks with micro-batch 2 (6 per step), from position 24
    after = [
        TrainLoader(split, 2, 1, r, 3, seed=5, start_step=3, start_position=pos) for r in range(3)
    ]
    later = np.concatenate([ld.indices(s, 0) for s in range(3, 6) for ld in after])
    stream = TrainLoader(split, 1, 1, seed=5)  # one sequence per step: the plain stream
    expect = np.concatenate([stream.indices(s, 0) for s in range(24 + 18)])
    assert np.array_equal(np.concatenate([seen, later]), expect)


def test_shards_are_hashed_once_per_file_and_again_when_they_change(
    train_shards, tmp_path, monkeypatch
):
    import shutil

    import train.data as data

    copy = tmp_path / "shards"
    shutil.copytree(train_shards, copy)
    calls: list[str] = []
    real = data.sha256_file
    monkeypatch.setattr(data, "sha256_file", lambda p: calls.append(p.name) or real(p))
    files = load_manifest(copy).splits["train"].files
    ShardSplit(copy, "train")
    assert sorted(calls) == sorted(f.path.split("/")[-1] for f in files)
    ShardSplit(copy, "train")  # verified already: not hashed again
    assert len(calls) == len(files)
    first = copy / files[0].path
    blob = bytearray(first.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one bit, in place: hashed again, refused
    first.write_bytes(bytes(blob))
    with pytest.raises(data.ShardCorruptError, match=f"{first.name}: sha256"):
        ShardSplit(copy, "train")
