"""The sharded dedup reduces (bucket tasks + connected components) equal the single task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.scale import planted_clusters_found, planted_map_parts, sim_config
from curate.dedup.clusters import UnionFind, clusters, clusters_streamed
from curate.dedup.common import bucket_of, read_edges
from curate.dedup.exact import EXACT_DEDUP, ExactDedupConfig
from curate.dedup.minhash import (
    NEAR_DEDUP,
    NearDedupConfig,
    _corpus_components,
    bucket_range,
    sorted_keys,
)
from curate.plan import SHUFFLE_ROW_GROUP
from curate.stage import GlobalStage
from curate.storage import (
    TableSlices,
    as_table,
    parquet_bytes,
    read_parquet,
    write_bytes_atomic,
    write_table_atomic,
)
from tests.test_dedup import llvm_docs, split_parts


def _map_files(stage: GlobalStage, parts: list[pa.Table], cfg, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    urls = []
    for i, part in enumerate(parts):
        url = str(folder / f"map-{i:05d}.parquet")
        write_bytes_atomic(parquet_bytes(stage.map(part, cfg)), url)
        urls.append(url)
    return urls


def _sharded(stage: GlobalStage, urls: list[str], cfg, n_buckets: int) -> pa.Table:
    """The bucket tasks over every part's map output, then the components."""
    edges = [stage.bucket(urls, cfg, b, n_buckets) for b in range(n_buckets)]
    return as_table(stage.components(urls, edges, cfg))


def _shuffled(stage: GlobalStage, urls: list[str], cfg, n_buckets: int) -> pa.Table:
    """The same with the key-range shuffle: each map's keys sorted by key beside it (as the
    map step writes them), each bucket task reading only its range."""
    keys = []
    for url in urls:
        keys.append(url.replace(".parquet", ".keys.parquet"))
        shuffled = stage.shuffle(read_parquet(url), cfg)
        write_bytes_atomic(parquet_bytes(shuffled, row_group_size=SHUFFLE_ROW_GROUP), keys[-1])
    edges = [stage.bucket(urls, cfg, b, n_buckets, keys=keys) for b in range(n_buckets)]
    return as_table(stage.components(urls, edges, cfg))


def test_bucket_key_ranges_are_the_buckets() -> None:
    keys = np.random.default_rng(3).integers(0, 2**64, 20_000, dtype=np.uint64)
    keys[:4] = [0, 2**64 - 1, 2**63, (2**32) * 7]
    top = keys >> np.uint64(32)
    for n in (1, 3, 7, 64):
        for b in range(n):
            lo, hi = bucket_range(b, n)
            assert np.array_equal((top >= lo) & (top < hi), bucket_of(keys, n) == b), (n, b)


def test_bucket_ranges_cover_every_key_once() -> None:
    keys = np.random.default_rng(0).integers(0, 2**64, 10_000, dtype=np.uint64)
    keys[:3] = [0, 2**64 - 1, 2**63]
    for n in (1, 2, 7, 64):
        b = bucket_of(keys, n)
        assert b.min() >= 0 and b.max() < n
        order = np.argsort(keys)  # ranges: the bucket never decreases as the key grows
        assert np.all(np.diff(b[order].astype(np.int64)) >= 0)
    assert bucket_of(keys, 7)[1] == 6 and bucket_of(keys, 1).max() == 0


def test_scipy_components_equal_union_find() -> None:
    rng = np.random.default_rng(1)
    pairs = rng.integers(0, 2000, (1500, 2))
    uf = UnionFind(2000)
    uf.union_pairs(pairs)
    assert np.array_equal(clusters(2000, pairs), uf.roots())


def test_streamed_components_equal_scipy() -> None:
    """Pairs in chunks, repeated and in both orders, long chains and stars: the same labels."""
    rng = np.random.default_rng(4)
    n = 5000
    chain = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)[::-1]  # one long path
    cases = [
        rng.integers(0, n, (3000, 2)),
        np.concatenate([chain[:2000], rng.integers(0, n, (50, 2))]),
        np.stack([np.full(900, 4321), rng.integers(0, n, 900)], axis=1),  # a star
        np.zeros((0, 2), np.int64),
    ]
    for pairs in cases:
        expected = clusters(n, pairs)
        chunks = np.array_split(np.concatenate([pairs, pairs[:, ::-1]]), 7)
        assert np.array_equal(clusters_streamed(n, chunks), expected)
        assert np.array_equal(clusters_streamed(n, [pairs]), expected)


def _edges_only_equals_corpus(urls: list[str], cfg: NearDedupConfig, n_buckets: int) -> pa.Table:
    """Without containment the components read only the documents in an edge: the same state
    as the components over every document of the corpus."""
    assert cfg.containment is None
    edges = [NEAR_DEDUP.bucket(urls, cfg, b, n_buckets) for b in range(n_buckets)]
    state = as_table(NEAR_DEDUP.components(urls, edges, cfg))
    whole = _corpus_components(urls, read_edges(edges), cfg)
    assert state.equals(whole)
    # as the plan writes it (part by part, as the slices come): the bytes of the whole table
    out = str(Path(urls[0]).parent / "state-slices.parquet")
    written = write_table_atomic(NEAR_DEDUP.components(urls, edges, cfg), out)
    assert Path(out).read_bytes() == parquet_bytes(whole)
    assert written["size"] == len(parquet_bytes(whole))
    return state


def test_a_table_written_in_slices_is_the_whole_tables_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for n in (0, 7, 65_536, 200_001):
        table = pa.table(
            {
                "id": pa.array([f"d{i}" if i % 3 else None for i in range(n)], pa.string()),
                "v": pa.array(rng.integers(0, 1000, n)),
            }
        )
        cuts = [0, *np.sort(rng.integers(0, n + 1, 6)).tolist(), n]
        pieces = [table.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        out = str(tmp_path / f"t{n}.parquet")
        written = write_table_atomic(TableSlices(table.schema, iter(pieces)), out)
        expected = parquet_bytes(table)
        assert Path(out).read_bytes() == expected and written["size"] == len(expected), n
        assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_sharded_equals_single_on_real_documents(tmp_path: Path) -> None:
    """Real LLVM manual pages (four versions: many near duplicates, exact copies, containment)
    in 3 parts: 1 bucket and 5 buckets give the same state, with verify and containment on."""
    rows = llvm_docs()
    rows += [dict(r, id=r["id"] + "-copy", source="copy/" + r["source"]) for r in rows[:40]]
    parts = split_parts(rows, 3)
    for stage, cfg in ((EXACT_DEDUP, ExactDedupConfig()), (NEAR_DEDUP, NearDedupConfig())):
        urls = _map_files(stage, parts, cfg, tmp_path / stage.name)
        single = stage.reduce(urls, cfg)
        assert single.num_rows > 40  # the copies at least
        for n_buckets in (2, 5):
            assert _sharded(stage, urls, cfg, n_buckets).equals(single), (stage.name, n_buckets)
        if stage.shuffle is not None:
            for n_buckets in (1, 4):
                assert _shuffled(stage, urls, cfg, n_buckets).equals(single), n_buckets
            # groups bigger than max_bucket: a chain in keep-rank order (ranks read for them)
            chained = NearDedupConfig(max_bucket=2, priority=["id"])
            single = stage.reduce(urls, chained)
            assert single.num_rows > 40
            assert _sharded(stage, urls, chained, 3).equals(single)
            assert _shuffled(stage, urls, chained, 3).equals(single)
            # containment off: the components of the documents in an edge alone, ranked by
            # the default policy (scores, format, length), by id, by order
            for policy in (None, ["id"], ["order"]):
                plain = NearDedupConfig(containment=None, priority=policy, max_bucket=3)
                state = _edges_only_equals_corpus(urls, plain, 3)
                assert state.num_rows > 40 and state.equals(stage.reduce(urls, plain))
                assert state["duplicate_of"].null_count < state.num_rows


def test_sharded_equals_single_on_100k_planted_documents(tmp_path: Path) -> None:
    """100k synthetic map outputs with planted clusters across parts: 7 buckets give the
    single task's state, and both find exactly the planted clusters."""
    cfg = sim_config()
    urls, root_of = planted_map_parts(100_000, 5, tmp_path)
    single = NEAR_DEDUP.reduce(urls, cfg)
    found = planted_clusters_found(single, root_of)
    assert found["exact"] and found["planted_copies"] > 15_000
    assert _sharded(NEAR_DEDUP, urls, cfg, 7).equals(single)
    assert _shuffled(NEAR_DEDUP, urls, cfg, 7).equals(single)
    assert _edges_only_equals_corpus(urls, cfg, 7).equals(single)


def test_direct_band_keys_give_the_signature_paths_state(tmp_path: Path) -> None:
    """The simulation's direct mode (the shuffle's sorted band keys written from the planted
    clusters, no signatures) gives the signature path's state: exactly the planted clusters."""
    cfg = sim_config()
    urls, root_of = planted_map_parts(30_000, 3, tmp_path / "signatures")
    from_signatures = _shuffled(NEAR_DEDUP, urls, cfg, 5)
    urls, direct_root_of = planted_map_parts(30_000, 3, tmp_path / "keys", direct=True)
    assert np.array_equal(direct_root_of, root_of)
    keys = [u.replace(".parquet", ".keys.parquet") for u in urls]
    edges = [NEAR_DEDUP.bucket(urls, cfg, b, 5, keys=keys) for b in range(5)]
    direct = as_table(NEAR_DEDUP.components(urls, edges, cfg))
    assert direct.equals(from_signatures)
    found = planted_clusters_found(direct, root_of)
    assert found["exact"] and found["planted_copies"] > 5_000


def test_sharded_exact_dedup_on_100k_hashes(tmp_path: Path) -> None:
    """Exact dedup over 100k text hashes (a quarter of them repeated, across parts): 6 buckets
    give the single task's state: every repeat names the first copy in part order."""
    rng = np.random.default_rng(2)
    n = 100_000
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
    repeat = np.flatnonzero(rng.random(n) < 0.25)
    repeat = repeat[repeat > 0]
    hashes[repeat] = hashes[rng.integers(0, repeat)]
    names = [f"d{k:07d}" for k in rng.permutation(n)]  # ids in another order than the rows
    urls = []
    for p, chunk in enumerate(np.array_split(np.arange(n), 4)):
        table = pa.table(
            {
                "id": pa.array([names[i] for i in chunk]),
                "text_hash": pa.array(hashes[chunk], pa.uint64()),
            }
        )
        urls.append(str(tmp_path / f"map-{p}.parquet"))
        write_bytes_atomic(parquet_bytes(table), urls[-1])
    cfg = ExactDedupConfig(priority=["order"])
    single = EXACT_DEDUP.reduce(urls, cfg)
    _, first = np.unique(hashes, return_index=True)
    assert single.num_rows == n - len(first)
    row_of = {name: i for i, name in enumerate(names)}
    kept = {row_of[d] for d in single["duplicate_of"].to_pylist()}
    assert kept <= set(first.tolist())
    assert _sharded(EXACT_DEDUP, urls, cfg, 6).equals(single)
    by_id = ExactDedupConfig(priority=["id"])  # bucket tasks then rank by the ids they hold
    single = EXACT_DEDUP.reduce(urls, by_id)
    assert _sharded(EXACT_DEDUP, urls, by_id, 6).equals(single)
    assert not single.equals(EXACT_DEDUP.reduce(urls, cfg))


def test_sorted_keys_order_by_key_then_band_then_row() -> None:
    """The shuffle's order, with many equal keys (copies share them) and skipped rows."""
    rng = np.random.default_rng(6)
    for m in (0, 1, 3000):
        keys = rng.integers(0, 40, (m, 16)).astype(np.uint64) << np.uint64(30)
        eligible = rng.random(m) < 0.8
        t = sorted_keys(keys, eligible)
        key = (t["top"].to_numpy().astype(np.uint64) << np.uint64(32)) | t["low"].to_numpy()
        band, row = t["band"].to_numpy(), t["row"].to_numpy()
        assert t.num_rows == 16 * int(eligible.sum())
        assert np.array_equal(key, keys[row, band]) and eligible[row].all()
        assert np.all(np.lexsort((row, band, key)) == np.arange(t.num_rows))
