"""Near dedup: MinHash over word n-gram shingles, LSH banding, union-find clusters.

Signatures use datasketch's ``affine32`` scheme (same seed -> same permutations; the input hash
is the low 32 bits of our shingle hash), so a row of the ``signature`` column wrapped as
``datasketch.LeanMinHash(seed=cfg.seed, hashvalues=row, scheme="affine32")`` is the sketch
``datasketch.MinHash`` would build from those shingle hashes. They are computed for a whole
batch of documents at once: one ``(shingles, num_perm)`` uint32 matrix product and a segmented
min (``np.minimum.reduceat``), never per token.

map (per part) -> ``id: string, signature: fixed_size_list<uint32>[num_perm], n_shingles: int32``
plus the keep-policy keys ``keep_<i>: float64`` (``length`` = distinct shingles) and
``shingles: large_list<uint64>`` (each document's distinct shingle hashes, with ``verify``) and
``sampled_shingles: large_list<uint64>`` (those with ``hash % containment_sample == 0``, with
``containment``).
reduce (``buckets`` tasks over the LSH band keys in their range -> edge lists; one
connected-components step) -> state ``id: string, minhash_cluster: int64, duplicate_of: string,
contained_in: string, containment: float32`` for every document with a near duplicate or a
container (``duplicate_of`` null for the copy kept; the cluster id is the kept copy's ordinal in
part order). Candidate pairs are documents sharing one LSH band (the band layout of
``datasketch.MinHashLSH``); with ``verify`` a pair joins a cluster only if the exact Jaccard of
the two shingle sets reaches ``threshold``. Then, among the copies kept, containment
(``curate.dedup.containment``): a document with at least ``containment`` of its shingles in one
other kept document is removed, ``contained_in`` naming that container (LSH Ensemble over the
same signatures, verified exactly with ``verify``). Which copy is kept, in both decisions, is
the :class:`~curate.dedup.common.KeepPolicy`.
score -> the part plus those columns; rules ``near_duplicate``, then ``contained_in``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pydantic import ConfigDict, Field, model_validator

from curate.dedup.clusters import clusters, clusters_streamed
from curate.dedup.common import (
    DUPLICATE_OF,
    Buckets,
    KeepPolicy,
    bucket_of,
    edges_table,
    has_duplicate_of,
    join_state,
    keep_rank,
    keep_values,
    members_rank,
    part_offsets,
    ranks_by_id,
    read_columns,
    read_edges,
    read_keys,
    take_or_null,
)
from curate.dedup.containment import (
    MAX_THREADS,
    choose_containers,
    ensemble_candidates,
    estimated_containment,
    exact_containment,
    sampled_candidates,
)
from curate.dedup.lsh_params import optimal_params, permutations
from curate.dedup.text import fmix64, slices_by_bytes, text_shingles
from curate.stage import GlobalStage, Rules
from curate.storage import TableSlices, as_table, read_parquet, read_parquet_rows

REASON = "near_duplicate"
CONTAINED_IN = "contained_in"  # removal reason, and the column naming the container's id
CONTAINMENT = "containment"  # share of the document's shingles found in its container
CLUSTER = "minhash_cluster"
SIGNATURE = "signature"
N_SHINGLES = "n_shingles"
SHINGLES = "shingles"
SAMPLED = "sampled_shingles"
STATE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field(CLUSTER, pa.int64()),
        pa.field(DUPLICATE_OF, pa.string()),
        pa.field(CONTAINED_IN, pa.string()),
        pa.field(CONTAINMENT, pa.float32()),
    ]
)
_EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's value for "no shingle seen"


class NearDedupConfig(KeepPolicy, Buckets):
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
    containment: float | None = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="remove a kept document when this share of its shingles lies in one other "
        "kept document (reason contained_in); None: off",
    )
    containment_min_shingles: int = Field(
        10, ge=1, description="documents with fewer distinct shingles are never judged contained"
    )
    containment_sample: int = Field(
        16, ge=1, description="1 in this many shingles (by hash) goes into the sampled index"
    )
    ensemble_partitions: int = Field(16, ge=1, description="LSH Ensemble size partitions")
    ensemble_max_rows: int = Field(8, ge=2, description="LSH Ensemble's m: most rows per band")
    containment_false_negative_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="weight of missed pairs in LSH Ensemble's parameters"
    )
    containment_prefilter: float = Field(
        0.75,
        ge=0.0,
        le=1.0,
        description="with verify, only candidates whose estimate (MinHash, or the sampled "
        "share) reaches this fraction of containment are checked exactly",
    )

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
        # (num_perm, rows): each permutation's values contiguous, so that the per-document
        # minimum runs along memory (reduceat along axis 0 of (rows, num_perm) was ~10× slower)
        permuted = a[:, None] * premixed[None, start:stop] + b[:, None]  # wraps mod 2**32
        d = doc[start:stop]
        seg = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        mins = np.minimum.reduceat(permuted, seg, axis=1).T
        owners = d[seg]
        sig[owners] = np.minimum(sig[owners], mins)
    return sig


def map_part(table: pa.Table, cfg: NearDedupConfig) -> pa.Table:
    """Signatures (and, with ``verify``, distinct shingle hashes) of one part's documents."""
    texts = table["text"]
    sigs, counts, shingle_lists, samples = [], [], [], []
    for start, stop in slices_by_bytes(texts, cfg.batch_bytes):
        sh = text_shingles(texts.slice(start, stop - start), cfg.ngram, cfg.lowercase)
        sigs.append(minhash_signatures(sh.hashes, sh.offsets, cfg.num_perm, cfg.seed))
        counts.append(sh.counts().astype(np.int32))
        if cfg.verify:
            shingle_lists.append(
                pa.LargeListArray.from_arrays(pa.array(sh.offsets), pa.array(sh.hashes))
            )
        if cfg.containment is not None:
            picked = sh.hashes % np.uint64(cfg.containment_sample) == 0
            offsets = np.zeros(len(sh.offsets), np.int64)
            picked_per_doc = np.bincount(sh.doc_of()[picked], minlength=len(sh.offsets) - 1)
            np.cumsum(picked_per_doc, out=offsets[1:])
            samples.append(
                pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(sh.hashes[picked]))
            )
    sig = np.concatenate(sigs) if sigs else np.zeros((0, cfg.num_perm), np.uint32)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "id": table["id"],
        SIGNATURE: pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), cfg.num_perm),
        N_SHINGLES: pa.array(np.concatenate(counts) if counts else np.zeros(0, np.int32)),
    }
    columns.update(keep_values(table, cfg, columns[N_SHINGLES].to_numpy()))
    for name, lists, wanted in (
        (SHINGLES, shingle_lists, cfg.verify),
        (SAMPLED, samples, cfg.containment is not None),
    ):
        if wanted:
            columns[name] = (
                pa.chunked_array(lists, pa.large_list(pa.uint64()))
                if lists
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


def band_pairs(key: np.ndarray, rank: np.ndarray, max_bucket: int = 64) -> np.ndarray:
    """Row pairs sharing a key of one band (possibly repeated, either order): all pairs of a
    group of up to ``max_bucket`` rows; in a bigger group (a mass of near-identical documents),
    pairs between neighbours in ``rank`` order and with its best row, which connect the group
    without a quadratic number of pairs."""
    n = len(key)
    order = np.lexsort((rank, key))
    k = key[order]
    start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if n else np.zeros(0, np.int64)
    size = np.diff(np.r_[start, n])
    small = (size >= 2) & (size <= max_bucket)
    found = [_pairs_within_groups(order, start[small], size[small])]
    for s, m in zip(start[size > max_bucket], size[size > max_bucket], strict=True):
        members = order[s : s + m]
        found.append(np.stack([members[:-1], members[1:]], axis=1))
        found.append(np.stack([np.full(m - 2, members[0]), members[2:]], axis=1))
    return np.concatenate(found).astype(np.int64)


def _distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of integers by one sort (numpy's hashing unique was ~10x slower on the
    tens of millions of entries of a bucket)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct ``values`` and the position of each value among them (by one
    sort: faster than ``np.unique`` + ``searchsorted`` on a bucket's entries)."""
    order = np.argsort(values)
    ordered = values[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]] if len(values) else np.zeros(0, bool)
    inverse = np.empty(len(values), np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse


def _distinct_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    lo, hi = pairs.min(axis=1), pairs.max(axis=1)
    code = _distinct(lo.astype(np.int64) * n + hi)
    return np.stack([code // n, code % n], axis=1)


def lsh_pairs_from_keys(keys: np.ndarray, rank: np.ndarray, max_bucket: int = 64) -> np.ndarray:
    """Distinct ``(i, j)`` row pairs (i < j) sharing a key in at least one band (column); see
    :func:`band_pairs` for buckets larger than ``max_bucket``."""
    found = [band_pairs(keys[:, band], rank, max_bucket) for band in range(keys.shape[1])]
    return _distinct_pairs(np.concatenate(found) if found else np.zeros((0, 2)), len(keys))


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct hashes."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def _load_shingles(
    urls: list[str], part: np.ndarray, row: np.ndarray, wanted: np.ndarray, name: str = SHINGLES
) -> dict[int, np.ndarray]:
    """Distinct shingle hashes of the ``wanted`` documents (global indices), one part at a time."""
    out: dict[int, np.ndarray] = {}
    for p, url in enumerate(urls):
        mine = wanted[part[wanted] == p]
        if len(mine) == 0:
            continue
        column = read_columns(url, [name])[name]
        taken = column.take(pa.array(row[mine])).combine_chunks()  # a copy of the wanted rows only
        del column
        offsets = taken.offsets.to_numpy()
        values = taken.flatten().to_numpy()
        base = offsets[0]
        for g, s, e in zip(mine.tolist(), offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
            out[g] = values[s - base : e - base]
    return out


def _load_signatures(
    urls: list[str], part: np.ndarray, row: np.ndarray, wanted: np.ndarray, num_perm: int
) -> np.ndarray:
    """``(len(wanted), num_perm)`` signatures of the ``wanted`` documents, one part at a time."""
    out = np.zeros((len(wanted), num_perm), np.uint32)
    for p, url in enumerate(urls):
        mine = np.flatnonzero(part[wanted] == p)
        if len(mine):
            sig = signature_matrix(read_columns(url, [SIGNATURE])[SIGNATURE], num_perm)
            out[mine] = sig[row[wanted[mine]]]
    return out


def contained_documents(
    urls: list[str],
    cfg: NearDedupConfig,
    candidates: np.ndarray,
    n_shingles: np.ndarray,
    rank: np.ndarray,
    part: np.ndarray,
    row: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Container (global index, -1: none) and containment of each document, among the global
    indices ``candidates`` (the copies near dedup keeps)."""
    n = len(rank)
    container = np.full(n, -1, np.int64)
    share = np.full(n, np.nan, np.float32)
    if cfg.containment is None:
        return container, share
    docs = candidates[n_shingles[candidates] > 0]
    sizes = n_shingles[docs].astype(np.int64)
    queries = np.flatnonzero(sizes >= cfg.containment_min_shingles)
    if len(docs) < 2 or len(queries) == 0:
        return container, share
    sig = _load_signatures(urls, part, row, docs, cfg.num_perm)
    by_lsh = ensemble_candidates(
        sig,
        sizes,
        queries,
        cfg.containment,
        cfg.ensemble_partitions,
        cfg.ensemble_max_rows,
        cfg.containment_false_negative_weight,
    )
    sampled = _load_shingles(urls, part, row, docs, SAMPLED)
    lengths = np.array([len(sampled[d]) for d in docs.tolist()], np.int64)
    offsets = np.zeros(len(docs) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([sampled[d] for d in docs.tolist()]) if len(docs) else lengths
    del sampled
    by_sample, sample_share = sampled_candidates(offsets, values, queries, cfg.containment)
    n_local = len(docs)
    codes = np.concatenate(
        [by_lsh[:, 0] * n_local + by_lsh[:, 1], by_sample[:, 0] * n_local + by_sample[:, 1]]
    )
    code = np.unique(codes)
    local = np.stack([code // n_local, code % n_local], axis=1)
    local = local[sizes[local[:, 1]] >= cfg.containment * sizes[local[:, 0]]]  # |B| >= c |A|
    # estimates: the sampled share where the pair has samples, else from MinHash
    c = estimated_containment(sig, sizes, local)
    s_code = by_sample[:, 0] * n_local + by_sample[:, 1]
    order = np.argsort(s_code)
    s_code, s_share = s_code[order], sample_share[order]
    l_code = local[:, 0] * n_local + local[:, 1]
    at = np.minimum(np.searchsorted(s_code, l_code), max(len(s_code) - 1, 0))
    found = (s_code[at] == l_code) if len(s_code) else np.zeros(len(l_code), bool)
    sample_est = np.where(found, s_share[at] if len(s_code) else 0.0, np.nan)
    if cfg.verify and len(local):
        likely = np.fmax(c, sample_est) >= cfg.containment_prefilter * cfg.containment
        local = local[likely]
        pairs = docs[local]
        sets = _load_shingles(urls, part, row, np.unique(pairs))
        c = np.array([exact_containment(sets[a], sets[b]) for a, b in pairs.tolist()])
        del sets
    else:
        c = np.where(np.isnan(sample_est), c, sample_est)
    del sig
    hit = c >= cfg.containment
    local, c = local[hit], c[hit]
    chosen = choose_containers(local, rank[docs])
    removed = np.flatnonzero(chosen >= 0)
    container[docs[removed]] = docs[chosen[removed]]
    if len(removed):
        by_edge = {(a, b): v for (a, b), v in zip(local.tolist(), c.tolist(), strict=True)}
        share[docs[removed]] = [by_edge[(a, chosen[a])] for a in removed.tolist()]
    return container, share


def _verified(urls: list[str], offsets: np.ndarray, pairs: np.ndarray, threshold: float):
    """The pairs (global indices) whose exact shingle Jaccard reaches ``threshold``."""
    if len(pairs) == 0:
        return pairs
    wanted = np.unique(pairs)
    part = np.searchsorted(offsets, wanted, side="right") - 1
    sets = _load_shingles(urls, part, wanted - offsets[part], np.arange(len(wanted)))
    local = np.searchsorted(wanted, pairs)
    similar = [exact_jaccard(sets[a], sets[b]) >= threshold for a, b in local.tolist()]
    return pairs[np.asarray(similar, bool)]


KEYS_SCHEMA = pa.schema(
    [
        pa.field("top", pa.uint32()),  # the key's top 32 bits: what a bucket's range is over
        pa.field("low", pa.uint32()),  # its low 32 bits
        pa.field("band", pa.uint16()),
        pa.field("row", pa.uint32()),  # the document's row in its part
    ]
)


def shuffle_keys(mapped: pa.Table, cfg: NearDedupConfig) -> pa.Table:
    """The map's side of the key-range shuffle: one row per (document with shingles, LSH band)
    with its band key, sorted by key (``KEYS_SCHEMA``), written beside the map output in small
    row groups: a bucket task reads only the row groups of its key range."""
    bands, rows = cfg.lsh_params()
    keys = band_keys(signature_matrix(mapped[SIGNATURE], cfg.num_perm), bands, rows)
    return sorted_keys(keys, mapped[N_SHINGLES].to_numpy() > 0)  # empty: no one's duplicate


def sorted_keys(keys: np.ndarray, eligible: np.ndarray) -> pa.Table:
    """A part's ``(docs, bands)`` band keys as the shuffle's table (``KEYS_SCHEMA``): one row
    per (``eligible`` document, band), sorted by key, then band, then row."""
    rows = np.flatnonzero(eligible)
    key = np.ascontiguousarray(keys[rows].T).ravel()  # band-major: (band, row) order
    order = np.argsort(key, kind="stable")  # ties stay in (band, row) order
    key = key[order]
    return pa.table(
        {
            "top": pa.array((key >> np.uint64(32)).astype(np.uint32)),
            "low": pa.array((key & np.uint64(0xFFFFFFFF)).astype(np.uint32)),
            "band": pa.array((order // max(len(rows), 1)).astype(np.uint16)),
            "row": pa.array(rows[order % max(len(rows), 1)].astype(np.uint32)),
        },
        schema=KEYS_SCHEMA,
    )


def bucket_range(bucket: int, n_buckets: int) -> tuple[int, int]:
    """The top-32-bit key range ``[lo, hi)`` of ``bucket`` (``bucket_of`` of those keys)."""
    return -(-(bucket << 32) // n_buckets), -(-((bucket + 1) << 32) // n_buckets)


def _entries_from_signatures(
    urls: list[str], offsets: np.ndarray, cfg: NearDedupConfig, bucket: int, n_buckets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, band, key) of the band keys in ``bucket``, computed from every part's
    signatures (no shuffle: every task reads every signature)."""
    bands, rows = cfg.lsh_params()
    entry_doc, entry_band, entry_key = [], [], []
    for p, url in enumerate(urls):
        t = read_columns(url, [SIGNATURE, N_SHINGLES])
        keys = band_keys(signature_matrix(t[SIGNATURE], cfg.num_perm), bands, rows)
        eligible = t[N_SHINGLES].to_numpy() > 0  # empty: no one's near duplicate
        r, c = np.nonzero((bucket_of(keys, n_buckets) == bucket) & eligible[:, None])
        entry_doc.append(offsets[p] + r)
        entry_band.append(c)
        entry_key.append(keys[r, c])
        del t, keys
    return _joined(entry_doc, entry_band, entry_key)


def _entries_from_keys(
    keys: list[str], offsets: np.ndarray, bucket: int, n_buckets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, band, key) of the band keys in ``bucket``, read from the map's shuffled
    keys (:func:`shuffle_keys`): only the row groups of the bucket's range."""
    lo, hi = bucket_range(bucket, n_buckets)
    entry_doc, entry_band, entry_key = [], [], []
    for p, url in enumerate(keys):
        rows = [("top", ">=", lo)] if lo > 0 else []
        rows += [("top", "<", hi)] if hi < 1 << 32 else []
        t = read_parquet_rows(url, rows) if rows else read_parquet(url)
        entry_doc.append(offsets[p] + t["row"].to_numpy().astype(np.int64))
        entry_band.append(t["band"].to_numpy())
        top, low = (t[c].to_numpy().astype(np.uint64) for c in ("top", "low"))
        entry_key.append((top << np.uint64(32)) | low)
    return _joined(entry_doc, entry_band, entry_key)


def _joined(doc: list, band: list, key: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not doc:
        return np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.uint64)
    return (
        np.concatenate(doc).astype(np.int64),
        np.concatenate(band).astype(np.int32),
        np.concatenate(key).astype(np.uint64),
    )


def _ranks_of(
    urls: list[str], offsets: np.ndarray, wanted: np.ndarray, cfg: NearDedupConfig
) -> np.ndarray:
    """The keep ranks of the ``wanted`` documents (sorted global indices) among themselves,
    from the key columns (and ids) of the parts that hold them."""
    part = np.searchsorted(offsets, wanted, side="right") - 1
    policy_keys: dict[str, list[np.ndarray]] = {name: [] for name in cfg.key_columns()}
    ids: list[pa.Array] = []
    for p in np.unique(part).tolist():
        rows = wanted[part == p] - offsets[p]
        columns = [*cfg.key_columns(), *(["id"] if ranks_by_id(cfg) else [])]
        t = read_columns(urls[p], columns)
        if ranks_by_id(cfg):
            ids.append(t["id"].combine_chunks().cast(pa.string()).take(pa.array(rows)))
        for name, values in read_keys(t, cfg).items():
            policy_keys[name].append(values[rows])
    return members_rank(policy_keys, ids, wanted, offsets, cfg)


def bucket_edges(
    urls: list[str],
    cfg: NearDedupConfig,
    bucket: int,
    n_buckets: int,
    keys: list[str] | None = None,
) -> pa.Table:
    """Edges ``(a, b)`` (global row indices in part order, a < b): the candidate pairs (verified
    with ``verify``) among the (band, key) entries whose band key falls in ``bucket``. A band's
    key group lies whole in one bucket, so the buckets' edges together are the single reduce's
    pairs. ``keys``: the map's shuffled keys (:func:`shuffle_keys`, one file per part), of which
    the task reads only its range (I/O and memory O(corpus / buckets)); without them every
    part's signatures are read and hashed (I/O O(corpus) per task). Only the members of a key
    group bigger than ``max_bucket`` need their keep rank (a chain through them, in rank order):
    their key columns are read for them alone."""
    offsets = part_offsets(urls)
    if keys is None:
        entry_doc, band, key = _entries_from_signatures(urls, offsets, cfg, bucket, n_buckets)
    else:
        entry_doc, band, key = _entries_from_keys(keys, offsets, bucket, n_buckets)
    members, doc = _unique_inverse(entry_doc)
    if len(members) < 2:
        return edges_table(np.zeros((0, 2), np.int64))
    # the members of the big groups: ranked among themselves (the rest need no rank)
    order = np.lexsort((key, band))
    same = (band[order][1:] == band[order][:-1]) & (key[order][1:] == key[order][:-1])
    start = np.flatnonzero(np.r_[True, ~same])
    size = np.diff(np.r_[start, len(order)])
    rank = np.zeros(len(members), np.int64)
    big = np.repeat(size > cfg.max_bucket, size)
    if big.any():
        ranked = np.unique(doc[order[big]])
        rank[ranked] = _ranks_of(urls, offsets, members[ranked], cfg)
    found = []
    for b in np.flatnonzero(np.bincount(band)).tolist():
        mine = np.flatnonzero(band == b)
        if len(mine) > 1:
            found.append(doc[mine][band_pairs(key[mine], rank[doc[mine]], cfg.max_bucket)])
    local = _distinct_pairs(np.concatenate(found) if found else np.zeros((0, 2)), len(members))
    pairs = members[local] if len(local) else np.zeros((0, 2), np.int64)
    if cfg.verify:
        pairs = _verified(urls, offsets, pairs, cfg.threshold)
    return edges_table(pairs)


def components(
    urls: list[str], edges: list[str | pa.Table], cfg: NearDedupConfig
) -> pa.Table | TableSlices:
    """The state from the buckets' edge lists: clusters are the connected components (the copy
    kept is each one's best by the keep policy); then the containers of the kept copies.
    Without containment only the documents in an edge matter (:func:`_edge_components`:
    memory O(those documents)); containment looks at every kept copy (O(corpus))."""
    if not urls:
        return STATE_SCHEMA.empty_table()
    if cfg.containment is None:  # in part-sized slices: the plan writes them as they come
        return _edge_components(urls, edges, cfg)
    return _corpus_components(urls, read_edges(edges), cfg)


def _edge_ends(edge: str | pa.Table) -> np.ndarray:
    """One edge list as an ``(m, 2)`` int64 array."""
    t = edge if isinstance(edge, pa.Table) else read_columns(edge, ["a", "b"])
    return np.stack([t["a"].to_numpy(), t["b"].to_numpy()], axis=1)


def _edge_components(
    urls: list[str], edges: list[str | pa.Table], cfg: NearDedupConfig
) -> TableSlices:
    """:func:`_corpus_components` without containment, from the documents in an edge alone
    (the members): which documents are members (one byte per document of the corpus, the only
    O(corpus) piece), their keep ranks among themselves (which order them as among all
    documents), the components over the edge lists read one at a time
    (:func:`clusters_streamed`: repeated pairs cost nothing), the ids of the kept copies that
    stand for others; then the state part by part (each part's member ids read then), so that
    it is never whole in memory. The same state as :func:`_corpus_components`."""
    offsets = part_offsets(urls)
    index = np.int32 if offsets[-1] < 2**31 else np.int64  # global indices, 4 bytes if they fit
    is_member = np.zeros(int(offsets[-1]), bool)
    for edge in edges:
        is_member[_edge_ends(edge).ravel()] = True
    step = 1 << 24  # members found a range at a time: no int64 index of them all
    members = np.concatenate(
        [np.zeros(0, index)]
        + [
            (np.flatnonzero(is_member[s : s + step]) + s).astype(index)
            for s in range(0, len(is_member), step)
        ]
    )
    del is_member
    ordered = not cfg.key_columns() and not ranks_by_id(cfg)  # rank = (part, row) order
    rank = None if ordered or not len(members) else _ranks_of(urls, offsets, members, cfg)

    def rank_pairs() -> Iterator[np.ndarray]:  # each edge list as member ranks
        for edge in edges:
            local = np.searchsorted(members, _edge_ends(edge).astype(index))
            yield local if rank is None else rank[local]

    kept = clusters_streamed(len(members), rank_pairs())  # in rank space: root = copy kept
    if rank is not None:
        kept = np.argsort(rank)[kept[rank]].astype(kept.dtype)
        del rank
    # the ids of the kept copies that stand for others, read part by part
    stand_for = np.unique(kept[kept != np.arange(len(members), dtype=kept.dtype)])
    kept_ids = _ids_of(urls, offsets, members[stand_for])

    def slices() -> Iterator[pa.Table]:
        for p in range(len(urls)):
            lo, hi = np.searchsorted(members, offsets[p : p + 2])
            if lo == hi:
                continue
            ids = _ids_of(urls, offsets, members[lo:hi])
            mine = kept[lo:hi]
            duplicate = mine != np.arange(lo, hi, dtype=mine.dtype)
            at = np.searchsorted(stand_for, mine)
            yield pa.table(
                {
                    "id": ids,
                    CLUSTER: pa.array(members[mine].astype(np.int64)),
                    DUPLICATE_OF: kept_ids.take(pa.array(at, pa.int64(), mask=~duplicate)),
                    CONTAINED_IN: pa.nulls(hi - lo, pa.string()),
                    CONTAINMENT: pa.nulls(hi - lo, pa.float32()),
                },
                schema=STATE_SCHEMA,
            )

    return TableSlices(STATE_SCHEMA, slices())


def _ids_of(urls: list[str], offsets: np.ndarray, wanted: np.ndarray) -> pa.Array:
    """The ids of the ``wanted`` documents (sorted global indices), one part at a time."""
    bounds = np.searchsorted(wanted, offsets)  # wanted[bounds[p]:bounds[p + 1]]: in part p
    ids = [pa.array([], pa.string())]
    for p in np.flatnonzero(np.diff(bounds)).tolist():
        column = read_columns(urls[p], ["id"])["id"]
        rows = wanted[bounds[p] : bounds[p + 1]].astype(np.int64) - offsets[p]
        ids.append(column.take(pa.array(rows)).combine_chunks().cast(pa.string()))
        del column
    return pa.concat_arrays(ids)


def _corpus_components(urls: list[str], pairs: np.ndarray, cfg: NearDedupConfig) -> pa.Table:
    """The components over every document of the corpus (ids, ranks, shingle counts), then
    containment among all the kept copies: :func:`components` with containment."""
    key_columns = cfg.key_columns()
    ids, n_shingles, part, row = [], [], [], []
    policy_keys: dict[str, list[np.ndarray]] = {name: [] for name in key_columns}
    for p, url in enumerate(urls):
        t = read_columns(url, ["id", N_SHINGLES, *key_columns])
        ids.append(t["id"].combine_chunks().cast(pa.string()))
        n_shingles.append(t[N_SHINGLES].to_numpy())
        for name, values in read_keys(t, cfg).items():
            policy_keys[name].append(values)
        part.append(np.full(t.num_rows, p, np.int64))
        row.append(np.arange(t.num_rows, dtype=np.int64))
    ids = pa.concat_arrays(ids)
    part, row = np.concatenate(part), np.concatenate(row)
    n_shingles = np.concatenate(n_shingles)
    rank = keep_rank({k: np.concatenate(v) for k, v in policy_keys.items()}, ids, part, row, cfg)

    # components in rank space: the root (smallest rank) of each cluster is the copy kept
    by_rank = np.argsort(rank)
    root_rank = clusters(len(rank), rank[pairs]) if len(pairs) else np.arange(len(rank))
    kept = by_rank[root_rank[rank]]  # global index of the kept copy of every document
    size = np.bincount(kept, minlength=len(rank))
    container, share = contained_documents(
        urls, cfg, np.flatnonzero(kept == np.arange(len(rank))), n_shingles, rank, part, row
    )
    members = np.flatnonzero((size[kept] > 1) | (container >= 0))
    in_cluster = size[kept[members]] > 1
    duplicate = kept[members] != members
    contained = container[members]
    return pa.table(
        {
            "id": ids.take(pa.array(members)),
            CLUSTER: pa.array(kept[members], pa.int64(), mask=~in_cluster),
            DUPLICATE_OF: take_or_null(ids, np.where(duplicate, kept[members], -1)),
            CONTAINED_IN: take_or_null(ids, contained),
            CONTAINMENT: pa.array(share[members], pa.float32(), from_pandas=True),
        },
        schema=STATE_SCHEMA,
    )


def reduce_parts(urls: list[str], cfg: NearDedupConfig) -> pa.Table:
    """Cluster near-duplicates over every part's signatures; name the copy each one keeps; then
    name the container of each kept copy that lies in another kept copy: the sharded reduce
    (:func:`bucket_edges`, :func:`components`) as one task."""
    if not urls:
        return STATE_SCHEMA.empty_table()
    return as_table(components(urls, [bucket_edges(urls, cfg, 0, 1)], cfg))


def score(table: pa.Table, state: pa.Table, cfg: NearDedupConfig) -> pa.Table:
    """The part plus ``minhash_cluster``, ``duplicate_of``, ``contained_in`` and
    ``containment`` (null when the document has no near duplicate, or no container)."""
    return join_state(table, state, [CLUSTER, DUPLICATE_OF, CONTAINED_IN, CONTAINMENT])


def rules(table: pa.Table, cfg: NearDedupConfig) -> Rules:
    return {
        REASON: has_duplicate_of(table),
        CONTAINED_IN: table[CONTAINED_IN].is_valid().to_numpy(zero_copy_only=False),
    }


NEAR_DEDUP = GlobalStage(
    name="near_dedup",
    config=NearDedupConfig,
    map=map_part,
    reduce=reduce_parts,
    bucket=bucket_edges,
    shuffle=shuffle_keys,
    components=components,
    score=score,
    rules=rules,
    # the containment search (sampled_candidates) runs its blocks on up to MAX_THREADS cores
    reduce_threads=lambda cfg: 1 if cfg.containment is None else MAX_THREADS,
)
