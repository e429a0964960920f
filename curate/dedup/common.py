"""Pieces shared by the dedup stages: which copy to keep, reading map outputs, state lookups."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from curate.storage import filesystem

PRIORITY = "priority"  # map-output column holding the configured score (float64)
DUPLICATE_OF = "duplicate_of"


class KeepPolicy(BaseModel):
    """Which copy of a duplicate group survives: the best ``priority`` score, then source order."""

    priority: str | None = Field(
        None,
        description="score column to prefer (e.g. quality_score); None: first in (part, row) order",
    )
    priority_descending: bool = Field(True, description="higher priority score is better")


def priority_column(table: pa.Table, policy: KeepPolicy) -> pa.Array | None:
    """The configured score as float64 (missing or non-numeric -> null), or None when unset."""
    if policy.priority is None:
        return None
    if policy.priority not in table.column_names:
        return pa.nulls(table.num_rows, pa.float64())
    column = table[policy.priority]
    try:
        return pc.cast(column, pa.float64()).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.nulls(table.num_rows, pa.float64())


def keep_rank(
    priority: np.ndarray | None, part: np.ndarray, row: np.ndarray, descending: bool = True
) -> np.ndarray:
    """Rank of each document (0 = kept first): best priority, nulls/NaN last, then (part, row)."""
    keys = [row, part]
    if priority is not None:
        p = np.asarray(priority, dtype=np.float64)
        p = -p if descending else p.copy()
        p[np.isnan(p)] = np.inf
        keys.append(p)
    order = np.lexsort(keys)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


def read_columns(url: str, columns: list[str]) -> pa.Table:
    """Selected columns of a parquet file on any fsspec filesystem."""
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def lookup(ids: pa.ChunkedArray | pa.Array, state_ids: pa.Array) -> np.ndarray:
    """Row of ``state_ids`` matching each id (-1 when absent)."""
    idx = pc.index_in(ids, value_set=state_ids)
    return idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """``table`` with column ``name`` set (replaced when an earlier stage already added it)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def take_or_null(values: pa.Array, rows: np.ndarray) -> pa.Array:
    """``values[rows]`` with null where ``rows`` is -1."""
    mask = rows < 0
    taken = values.take(pa.array(np.where(mask, 0, rows))) if len(values) else None
    if taken is None:
        return pa.nulls(len(rows), values.type)
    return pc.if_else(pa.array(mask), pa.scalar(None, values.type), taken)


def join_state(table: pa.Table, state: pa.Table, columns: list[str]) -> pa.Table:
    """``table`` plus ``columns`` of the reduce ``state`` matched by ``id`` (null: no match)."""
    rows = lookup(table["id"], state["id"].combine_chunks())
    for name in columns:
        table = with_column(table, name, take_or_null(state[name].combine_chunks(), rows))
    return table


def has_duplicate_of(table: pa.Table) -> np.ndarray:
    """Rows that a kept copy elsewhere stands for: the decide mask of both dedup stages."""
    return table[DUPLICATE_OF].is_valid().to_numpy(zero_copy_only=False)
