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
    KeepPolicy,
    has_duplicate_of,
    join_state,
    keep_rank,
    keep_values,
    read_columns,
    read_keys,
)
from curate.dedup.text import normalize
from curate.stage import GlobalStage, Rules

REASON = "exact_duplicate"
TEXT_HASH = "text_hash"
STATE_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field(DUPLICATE_OF, pa.string())])


class ExactDedupConfig(KeepPolicy):
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


def reduce_parts(urls: list[str], cfg: ExactDedupConfig) -> pa.Table:
    """Read every part's summary (in part order) and name the copy each duplicate is one of."""
    columns = ["id", TEXT_HASH, *cfg.key_columns()]
    tables = [read_columns(url, columns) for url in urls]
    if not tables:
        return STATE_SCHEMA.empty_table()
    part = np.concatenate([np.full(t.num_rows, i, np.int64) for i, t in enumerate(tables)])
    row = np.concatenate([np.arange(t.num_rows, dtype=np.int64) for t in tables])
    summary = pa.concat_tables(tables)
    ids = summary["id"].combine_chunks()
    hashes = summary[TEXT_HASH].combine_chunks()
    valid = hashes.is_valid().to_numpy(zero_copy_only=False)
    rank = keep_rank(read_keys(summary, cfg), ids, part, row, cfg)

    cand = np.flatnonzero(valid)
    h = hashes.fill_null(0).to_numpy()[cand]
    order = cand[np.lexsort((rank[cand], h))]  # by hash, then best first
    h_sorted = hashes.fill_null(0).to_numpy()[order]
    first = np.ones(len(order), bool)
    first[1:] = h_sorted[1:] != h_sorted[:-1]
    group_first = order[np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))]
    removed = order[~first]
    kept_of_removed = group_first[~first]
    sort = np.argsort(removed, kind="stable")
    return pa.table(
        {
            "id": ids.take(pa.array(removed[sort])).cast(pa.string()),
            DUPLICATE_OF: ids.take(pa.array(kept_of_removed[sort])).cast(pa.string()),
        },
        schema=STATE_SCHEMA,
    )


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
    score=score,
    rules=rules,
)
