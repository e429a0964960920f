"""Near dedup: MinHash over word n-gram shingles, LSH banding, union-find clusters.

Signatures use datasketch's ``affine32`` scheme (same seed -> same permutations; the input hash
is the low 32 bits of our shingle hash), so a row of the ``signature`` column wrapped as
``datasketch.LeanMinHash(seed=cfg.seed, hashvalues=row, scheme="affine32")`` is the sketch
``datasketch.MinHash`` would build from those shingle hashes. They are computed for a whole
batch of documents at once: one ``(shingles, num_perm)`` uint32 matrix product and a segmented
min (``np.minimum.reduceat``), never per token.

map (per part) -> ``id: string, signature: fixed_size_list<uint32>[num_perm], n_shingles: int32``
plus ``priority: float64`` (with ``priority`` set) and ``shingles: large_list<uint64>`` (each
document's distinct shingle hashes, with ``verify``).
reduce (once) -> state ``id: string, minhash_cluster: int64, duplicate_of: string`` for every
document with a near duplicate (``duplicate_of`` null for the copy kept; the cluster id is the
kept copy's ordinal in part order). Candidate pairs are documents sharing one LSH band (the
band layout of ``datasketch.MinHashLSH``); with ``verify`` a pair joins a cluster only if the
exact Jaccard of the two shingle sets reaches ``threshold``.
score -> the part plus ``minhash_cluster`` and ``duplicate_of``; rule ``near_duplicate``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
from pydantic import ConfigDict, Field, model_validator

from curate.dedup.clusters import clusters
from curate.dedup.common import (
    DUPLICATE_OF,
    PRIORITY,
    KeepPolicy,
    has_duplicate_of,
    join_state,
    keep_rank,
    priority_column,
    read_columns,
    take_or_null,
)
from curate.dedup.text import fmix64, text_shingles
from curate.stage import GlobalStage, Rules

REASON = "near_duplicate"
CLUSTER = "minhash_cluster"
SIGNATURE = "signature"
N_SHINGLES = "n_shingles"
SHINGLES = "shingles"
STATE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field(CLUSTER, pa.int64()),
        pa.field(DUPLICATE_OF, pa.string()),
    ]
)
_EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's value for "no shingle seen"


class NearDedupConfig(KeepPolicy):
    """Shingling, MinHash/LSH parameters and which copy to keep."""

    model_config = ConfigDict(extra="forbid")

    ngram: int = Field(5, ge=1, description="words per shingle (characters for CJK/Thai text)")
    lowercase: bool = True
    num_perm: int = Field(128, ge=2, le=1024)
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity of duplicates")
    bands: int | None = Field(None, ge=1, description="LSH bands; None: datasketch's optimum")
    rows: int | None = Field(None, ge=1, description="signature rows per band")
    false_negative_weight: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="weight of missed pairs in datasketch's (bands, rows) search (false positives "
        "get 1 minus it); None: 0.95 with verify (exact Jaccard removes the extra candidates), "
        "0.5 without",
    )
    seed: int = 1
    verify: bool = Field(True, description="confirm candidate pairs by exact shingle Jaccard")
    max_bucket: int = Field(
        64, ge=2, description="LSH buckets larger than this pair along a chain, not all pairs"
    )
    batch_bytes: int = Field(1 << 20, ge=1 << 10, description="text bytes hashed per batch")

    @model_validator(mode="after")
    def _bands_fit(self) -> NearDedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} > num_perm = {self.num_perm}")
        return self

    def lsh_params(self) -> tuple[int, int]:
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        fn = self.false_negative_weight
        if fn is None:
            fn = 0.95 if self.verify else 0.5
        return optimal_params(self.threshold, self.num_perm, fn)


@lru_cache(maxsize=32)
def optimal_params(
    threshold: float, num_perm: int, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive + negative areas (datasketch's)."""
    from datasketch.lsh import _optimal_param

    b, r = _optimal_param(threshold, num_perm, 1.0 - false_negative_weight, false_negative_weight)
    return int(b), int(r)


@lru_cache(maxsize=32)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters ``(a, b)`` (uint32) for this seed."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (datasketch pre-mixes every input hash with it)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def minhash_signatures(
    hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int, chunk_rows: int = 1 << 14
) -> np.ndarray:
    """``(docs, num_perm)`` uint32 signatures of the shingle hashes ``hashes[offsets[i]:...]``."""
    a, b = permutations(num_perm, seed)
    n_docs = len(offsets) - 1
    sig = np.full((n_docs, num_perm), _EMPTY, np.uint32)
    if len(hashes) == 0:
        return sig
    premixed = fmix32((hashes & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    doc = np.repeat(np.arange(n_docs), np.diff(offsets))
    for start in range(0, len(premixed), chunk_rows):
        stop = min(start + chunk_rows, len(premixed))
        permuted = premixed[start:stop, None] * a[None, :] + b[None, :]  # wraps mod 2**32
        d = doc[start:stop]
        seg = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        mins = np.minimum.reduceat(permuted, seg, axis=0)
        owners = d[seg]
        sig[owners] = np.minimum(sig[owners], mins)
    return sig


def _slices_by_bytes(texts: pa.ChunkedArray | pa.Array, budget: int) -> list[tuple[int, int]]:
    import pyarrow.compute as pc

    lengths = pc.binary_length(texts).fill_null(0).to_numpy(zero_copy_only=False)
    bounds, start, acc = [], 0, 0
    for i, length in enumerate(lengths.tolist()):
        if acc and acc + length > budget:
            bounds.append((start, i))
            start, acc = i, 0
        acc += length
    if start < len(lengths) or not bounds:
        bounds.append((start, len(lengths)))
    return bounds


def map_part(table: pa.Table, cfg: NearDedupConfig) -> pa.Table:
    """Signatures (and, with ``verify``, distinct shingle hashes) of one part's documents."""
    texts = table["text"]
    sigs, counts, shingle_lists = [], [], []
    for start, stop in _slices_by_bytes(texts, cfg.batch_bytes):
        sh = text_shingles(texts.slice(start, stop - start), cfg.ngram, cfg.lowercase)
        sigs.append(minhash_signatures(sh.hashes, sh.offsets, cfg.num_perm, cfg.seed))
        counts.append(sh.counts().astype(np.int32))
        if cfg.verify:
            shingle_lists.append(
                pa.LargeListArray.from_arrays(pa.array(sh.offsets), pa.array(sh.hashes))
            )
    sig = np.concatenate(sigs) if sigs else np.zeros((0, cfg.num_perm), np.uint32)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "id": table["id"],
        SIGNATURE: pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), cfg.num_perm),
        N_SHINGLES: pa.array(np.concatenate(counts) if counts else np.zeros(0, np.int32)),
    }
    priority = priority_column(table, cfg)
    if priority is not None:
        columns[PRIORITY] = priority
    if cfg.verify:
        columns[SHINGLES] = (
            pa.chunked_array(shingle_lists, pa.large_list(pa.uint64()))
            if shingle_lists
            else pa.array([], pa.large_list(pa.uint64()))
        )
    return pa.table(columns)


def signature_matrix(column: pa.ChunkedArray | pa.Array, num_perm: int) -> np.ndarray:
    """A ``fixed_size_list<uint32>`` column as a ``(rows, num_perm)`` array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else None
    if column is None or len(column) == 0:
        return np.zeros((0, num_perm), np.uint32)
    return column.flatten().to_numpy().reshape(-1, num_perm)


def _band_keys(band: np.ndarray) -> np.ndarray:
    """64-bit key of each row of a band (collisions only add candidates that verify rejects)."""
    key = np.zeros(len(band), np.uint64)
    for column in band.T:
        key = fmix64(key * np.uint64(0x9E3779B97F4A7C15) + column.astype(np.uint64))
    return key


def _pairs_within_groups(members: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """All pairs ``(members[i], members[j])``, i < j, inside each group (vectorised)."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros((0, 2), np.int64)
    pos = np.repeat(starts, sizes) + (np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    group_end = np.repeat(starts + sizes, sizes)
    later = group_end - pos - 1
    left = np.repeat(pos, later)
    run_start = np.repeat(np.cumsum(later) - later, later)
    right = left + 1 + (np.arange(len(left)) - run_start)
    return np.stack([members[left], members[right]], axis=1)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(docs, bands)`` uint64: one key per LSH band (the band layout of datasketch)."""
    keys = np.empty((len(sig), bands), np.uint64)
    for band in range(bands):
        keys[:, band] = _band_keys(sig[:, band * rows : (band + 1) * rows])
    return keys


def lsh_pairs_from_keys(keys: np.ndarray, rank: np.ndarray, max_bucket: int = 64) -> np.ndarray:
    """Distinct ``(i, j)`` row pairs (i < j) sharing a key in at least one band (column).

    Buckets of up to ``max_bucket`` rows give all their pairs; a bigger bucket (a mass of
    near-identical documents) gives pairs between neighbours in ``rank`` order and with its best
    row, which connects the bucket without a quadratic number of pairs.
    """
    n = len(keys)
    found = []
    for band in range(keys.shape[1]):
        key = keys[:, band]
        order = np.lexsort((rank, key))
        k = key[order]
        start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        size = np.diff(np.r_[start, n])
        small = (size >= 2) & (size <= max_bucket)
        found.append(_pairs_within_groups(order, start[small], size[small]))
        for s, m in zip(start[size > max_bucket], size[size > max_bucket], strict=True):
            members = order[s : s + m]
            found.append(np.stack([members[:-1], members[1:]], axis=1))
            found.append(np.stack([np.full(m - 2, members[0]), members[2:]], axis=1))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    if len(pairs) == 0:
        return pairs.astype(np.int64)
    lo, hi = pairs.min(axis=1), pairs.max(axis=1)
    code = np.unique(lo.astype(np.int64) * n + hi)
    return np.stack([code // n, code % n], axis=1)


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct hashes."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def _load_shingles(
    urls: list[str], part: np.ndarray, row: np.ndarray, wanted: np.ndarray
) -> dict[int, np.ndarray]:
    """Distinct shingle hashes of the ``wanted`` documents (global indices), one part at a time."""
    out: dict[int, np.ndarray] = {}
    for p, url in enumerate(urls):
        mine = wanted[part[wanted] == p]
        if len(mine) == 0:
            continue
        column = read_columns(url, [SHINGLES])[SHINGLES].combine_chunks()
        taken = column.take(pa.array(row[mine]))
        offsets = taken.offsets.to_numpy()
        values = taken.flatten().to_numpy()
        base = offsets[0]
        for g, s, e in zip(mine.tolist(), offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
            out[g] = values[s - base : e - base]
    return out


def reduce_parts(urls: list[str], cfg: NearDedupConfig) -> pa.Table:
    """Cluster near-duplicates over every part's signatures; name the copy each one keeps."""
    if not urls:
        return STATE_SCHEMA.empty_table()
    bands, rows = cfg.lsh_params()
    columns = ["id", SIGNATURE, N_SHINGLES] + ([PRIORITY] if cfg.priority else [])
    # one part at a time: only the band keys (8 bytes per band) of a signature are kept
    keys, ids, n_shingles, priority, part, row = [], [], [], [], [], []
    for p, url in enumerate(urls):
        t = read_columns(url, columns)
        keys.append(band_keys(signature_matrix(t[SIGNATURE], cfg.num_perm), bands, rows))
        ids.append(t["id"].combine_chunks().cast(pa.string()))
        n_shingles.append(t[N_SHINGLES].to_numpy())
        if cfg.priority:
            priority.append(t[PRIORITY].to_numpy(zero_copy_only=False))
        part.append(np.full(t.num_rows, p, np.int64))
        row.append(np.arange(t.num_rows, dtype=np.int64))
        del t
    all_keys = np.concatenate(keys)
    del keys
    ids = pa.concat_arrays(ids)
    part, row = np.concatenate(part), np.concatenate(row)
    rank = keep_rank(
        np.concatenate(priority) if cfg.priority else None, part, row, cfg.priority_descending
    )

    eligible = np.flatnonzero(np.concatenate(n_shingles) > 0)  # empty: no one's near duplicate
    local = lsh_pairs_from_keys(all_keys[eligible], rank[eligible], cfg.max_bucket)
    pairs = eligible[local] if len(local) else np.zeros((0, 2), np.int64)
    del all_keys
    if cfg.verify and len(pairs):
        sets = _load_shingles(urls, part, row, np.unique(pairs))
        similar = [exact_jaccard(sets[a], sets[b]) >= cfg.threshold for a, b in pairs.tolist()]
        pairs = pairs[np.asarray(similar, bool)]

    # union in rank space: the root (smallest rank) of each cluster is the copy kept
    by_rank = np.argsort(rank)
    root_rank = clusters(len(rank), rank[pairs]) if len(pairs) else np.arange(len(rank))
    kept = by_rank[root_rank[rank]]  # global index of the kept copy of every document
    size = np.bincount(kept, minlength=len(rank))
    members = np.flatnonzero(size[kept] > 1)
    duplicate = kept[members] != members
    dup_ids = ids.take(pa.array(kept[members]))
    return pa.table(
        {
            "id": ids.take(pa.array(members)),
            CLUSTER: pa.array(kept[members], pa.int64()),
            DUPLICATE_OF: take_or_null(dup_ids, np.where(duplicate, np.arange(len(members)), -1)),
        },
        schema=STATE_SCHEMA,
    )


def score(table: pa.Table, state: pa.Table, cfg: NearDedupConfig) -> pa.Table:
    """The part plus ``minhash_cluster`` and ``duplicate_of`` (null when no near duplicate)."""
    return join_state(table, state, [CLUSTER, DUPLICATE_OF])


def rules(table: pa.Table, cfg: NearDedupConfig) -> Rules:
    return {REASON: has_duplicate_of(table)}


NEAR_DEDUP = GlobalStage(
    name="near_dedup",
    config=NearDedupConfig,
    map=map_part,
    reduce=reduce_parts,
    score=score,
    rules=rules,
)
