"""Exact dedup: xxh3-64 of the normalised text; the best copy of each hash is kept.

map (per part) -> ``id: string, text_hash: uint64 (null: text too short to judge)`` plus the
keep-policy keys ``keep_<i>: float64`` (``length`` = normalised characters). reduce (once) -> state ``id, duplicate_of`` with one row
per removed copy. score -> the part plus ``duplicate_of`` (string, null when kept); rule
``exact_duplicate`` removes rows whose ``duplicate_of`` is set.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import ConfigDict, Field

from curate.dedup.common import (
    DUPLICATE_OF,
    Buckets,
    KeepPolicy,
    bucket_of,
    edges_table,
    has_duplicate_of,
    join_state,
    keep_values,
    members_rank,
    part_offsets,
    ranks_by_id,
    read_columns,
    read_edges,
    read_keys,
)
from curate.dedup.text import normalize
from curate.stage import GlobalStage, Rules

REASON = "exact_duplicate"
TEXT_HASH = "text_hash"
STATE_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field(DUPLICATE_OF, pa.string())])


class ExactDedupConfig(KeepPolicy, Buckets):
    """Normalisation applied before hashing, and which copy to keep."""

    model_config = ConfigDict(extra="forbid")

    nfkc: bool = True
    lowercase: bool = True
    collapse_whitespace: bool = True
    strip_punctuation: bool = False
    strip_digits: bool = False
    min_length: int = Field(
        1, ge=0, description="normalised texts shorter than this (characters) are never removed"
    )


def text_hashes(texts: pa.Array | pa.ChunkedArray, cfg: ExactDedupConfig) -> pa.Array:
    """uint64 hash of each normalised text (null when shorter than ``min_length``)."""
    return _hashes_and_lengths(texts, cfg)[0]


def _hashes_and_lengths(
    texts: pa.Array | pa.ChunkedArray, cfg: ExactDedupConfig
) -> tuple[pa.Array, np.ndarray]:
    norm = normalize(
        texts,
        cfg.lowercase,
        cfg.collapse_whitespace,
        cfg.strip_punctuation,
        cfg.strip_digits,
        cfg.nfkc,
    )
    length = pc.utf8_length(norm).to_numpy(zero_copy_only=False)
    long_enough = length >= cfg.min_length
    digest = xxhash.xxh3_64_intdigest
    hashes = np.fromiter(
        (digest(t.encode("utf-8", "surrogatepass")) for t in norm.to_pylist()),
        dtype=np.uint64,
        count=len(norm),
    )
    return pa.array(hashes, pa.uint64(), mask=~long_enough), length


def map_part(table: pa.Table, cfg: ExactDedupConfig) -> pa.Table:
    """The compact summary of one part: id, text hash and the keep-policy keys."""
    hashes, length = _hashes_and_lengths(table["text"], cfg)
    return pa.table({"id": table["id"], TEXT_HASH: hashes, **keep_values(table, cfg, length)})


def bucket_edges(urls: list[str], cfg: ExactDedupConfig, bucket: int, n_buckets: int) -> pa.Table:
    """Edges ``(a: removed copy, b: the copy it is a duplicate of)`` (global row indices in part
    order) among the documents whose text hash falls in ``bucket``; memory O(corpus / buckets)."""
    offsets = part_offsets(urls)
    mine, hashes, ids = [], [], []
    policy_keys: dict[str, list[np.ndarray]] = {name: [] for name in cfg.key_columns()}
    for p, url in enumerate(urls):
        t = read_columns(
            url, [TEXT_HASH, *cfg.key_columns(), *(["id"] if ranks_by_id(cfg) else [])]
        )
        h = t[TEXT_HASH].combine_chunks()
        valid = h.is_valid().to_numpy(zero_copy_only=False)
        values = h.fill_null(0).to_numpy()
        rows = np.flatnonzero(valid & (bucket_of(values, n_buckets) == bucket))
        mine.append(offsets[p] + rows)
        hashes.append(values[rows])
        if ranks_by_id(cfg):
            ids.append(t["id"].combine_chunks().cast(pa.string()).take(pa.array(rows)))
        for name, v in read_keys(t, cfg).items():
            policy_keys[name].append(v[rows])
        del t
    members = np.concatenate(mine) if mine else np.zeros(0, np.int64)
    if len(members) < 2:
        return edges_table(np.zeros((0, 2), np.int64))
    h = np.concatenate(hashes)
    rank = members_rank(policy_keys, ids, members, offsets, cfg)
    order = np.lexsort((rank, h))  # by hash, then best first
    h_sorted = h[order]
    first = np.ones(len(order), bool)
    first[1:] = h_sorted[1:] != h_sorted[:-1]
    group_first = order[np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))]
    return edges_table(np.stack([members[order[~first]], members[group_first[~first]]], axis=1))


def components(urls: list[str], edges: list[str | pa.Table], cfg: ExactDedupConfig) -> pa.Table:
    """The state from the buckets' edge lists: one row per removed copy, in part order (a hash
    group lies in one bucket, so every edge already names the kept copy)."""
    pairs = read_edges(edges)
    if not urls:
        return STATE_SCHEMA.empty_table()
    ids = pa.concat_arrays(
        [read_columns(u, ["id"])["id"].combine_chunks().cast(pa.string()) for u in urls]
    )
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    return pa.table(
        {"id": ids.take(pa.array(pairs[:, 0])), DUPLICATE_OF: ids.take(pa.array(pairs[:, 1]))},
        schema=STATE_SCHEMA,
    )


def reduce_parts(urls: list[str], cfg: ExactDedupConfig) -> pa.Table:
    """Read every part's summary (in part order) and name the copy each duplicate is one of: the
    sharded reduce as one task (one bucket)."""
    return components(urls, [bucket_edges(urls, cfg, 0, 1)], cfg)


def score(table: pa.Table, state: pa.Table, cfg: ExactDedupConfig) -> pa.Table:
    """The part plus ``duplicate_of`` (the kept copy's id; null for kept documents)."""
    return join_state(table, state, [DUPLICATE_OF])


def rules(table: pa.Table, cfg: ExactDedupConfig) -> Rules:
    return {REASON: has_duplicate_of(table)}


EXACT_DEDUP = GlobalStage(
    name="exact_dedup",
    config=ExactDedupConfig,
    map=map_part,
    reduce=reduce_parts,
    bucket=bucket_edges,
    components=components,
    score=score,
    rules=rules,
)
