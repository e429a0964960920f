"""Pieces shared by the dedup stages: which copy to keep, reading map outputs, state lookups.

Which copy of a duplicate group survives is one stated policy (:class:`KeepPolicy`), used by
exact, near and containment decisions alike: an ordered list of keys, each a score column
(``quality_score desc``), ``format`` (the rendition by ``format_order``: html before txt before
pdf), ``length`` (the text's size as the stage measures it), ``id`` or ``order`` (input order).
Each map writes the keys as ``keep_<i>`` float64 columns, oriented so that lower is better and
null is worst; the reduce ranks documents by them with :func:`keep_rank` (0 = kept first).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, field_validator

from curate.storage import filesystem

DUPLICATE_OF = "duplicate_of"
# keys computed by the stage rather than read from a column
FORMAT, LENGTH, ID, ORDER = "format", "length", "id", "order"
DEFAULT_PRIORITY = ["quality_score desc", "format", "length desc", "order"]
DEFAULT_FORMAT_ORDER = [
    *("html", "xhtml", "htm", "md", "rst", "txt", "text", "info", "man"),
    "*",  # every rendition not listed
    *("pdf", "ps", "djvu"),
]
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".dz", ".z")


class Buckets(BaseModel):
    """How a dedup reduce is sharded: ``buckets`` tasks, each over the keys (hashes, LSH band
    keys) in its range, then one connected-components step over their edge lists."""

    buckets: int | None = Field(
        None, ge=1, description="reduce tasks; None: one per docs_per_bucket documents"
    )
    docs_per_bucket: int = Field(
        1_000_000, ge=1, description="documents per reduce task when buckets is None"
    )

    def n_buckets(self, n_docs: int) -> int:
        return self.buckets or max(1, -(-n_docs // self.docs_per_bucket))


BUCKET_OPTIONS = frozenset(Buckets.model_fields)  # they change how a reduce runs, not its result
EDGES_SCHEMA = pa.schema([pa.field("a", pa.int64()), pa.field("b", pa.int64())])


def bucket_of(keys: np.ndarray, n_buckets: int) -> np.ndarray:
    """The bucket (0..n_buckets-1) of each uint64 key: its range of the top 32 bits."""
    return ((np.asarray(keys, np.uint64) >> np.uint64(32)) * np.uint64(n_buckets)) >> np.uint64(32)


def part_offsets(urls: list[str]) -> np.ndarray:
    """Global index of each part's first row (and the total last), from the parquet footers."""
    sizes = []
    for url in urls:
        fs, path = filesystem(url)
        with fs.open(path, "rb") as f:
            sizes.append(pq.read_metadata(f).num_rows)
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)


def edges_table(pairs: np.ndarray) -> pa.Table:
    """An ``(m, 2)`` array of global index pairs as an edge list."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return pa.table({"a": pairs[:, 0], "b": pairs[:, 1]}, schema=EDGES_SCHEMA)


def read_edges(edges: list[str | pa.Table]) -> np.ndarray:
    """The distinct pairs of several edge lists (files or tables) as an ``(m, 2)`` array."""
    arrays = []
    for e in edges:
        t = e if isinstance(e, pa.Table) else read_columns(e, ["a", "b"])
        arrays.append(np.stack([t["a"].to_numpy(), t["b"].to_numpy()], axis=1))
    pairs = np.concatenate(arrays) if arrays else np.zeros((0, 2), np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.astype(np.int64)


class KeepKey(NamedTuple):
    name: str
    descending: bool


class KeepPolicy(BaseModel):
    """Which copy of a duplicate group survives: the first document by the ``priority`` keys."""

    priority: list[str] | str | None = Field(
        None,
        description="ordered keys, each '<column> [asc|desc]', 'format', 'length [asc|desc]', "
        "'id' or 'order' (input order, always the last tie-breaker); a bare column name means "
        "that column (desc) then the default keys; None: " + ", ".join(DEFAULT_PRIORITY),
    )
    priority_descending: bool = Field(
        True, description="direction of a bare priority column name (higher score is better)"
    )
    format_order: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FORMAT_ORDER),
        description="renditions from cleanest to worst (source extension, else the format "
        "column); '*' places every unlisted one",
    )

    @field_validator("priority")
    @classmethod
    def _keys_parse(cls, value: list[str] | str | None) -> list[str] | str | None:
        for item in [value] if isinstance(value, str) else value or []:
            parse_key(item)
        return value

    def keep_keys(self) -> list[KeepKey]:
        """The parsed keys, ``order`` appended when absent (ties never depend on chance)."""
        if self.priority is None:
            items = list(DEFAULT_PRIORITY)
        elif isinstance(self.priority, str):
            head = parse_key(self.priority)
            if len(self.priority.split()) == 1 and head.name not in (FORMAT, LENGTH, ID, ORDER):
                head = KeepKey(head.name, self.priority_descending)
            rest = [k for k in DEFAULT_PRIORITY if parse_key(k).name != head.name]
            return _with_order([head, *map(parse_key, rest)])
        else:
            items = list(self.priority)
        return _with_order([parse_key(k) for k in items])

    def key_columns(self) -> list[str]:
        """Names of the map-output columns holding the keys (``id`` and ``order`` need none)."""
        return [f"keep_{i}" for i, k in enumerate(self.keep_keys()) if k.name not in (ID, ORDER)]


def parse_key(item: str) -> KeepKey:
    """``'quality_score desc'`` -> KeepKey('quality_score', True); bare names take defaults."""
    words = item.split()
    if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
        raise ValueError(f"priority key {item!r}: expected '<name>' or '<name> asc|desc'")
    name = words[0]
    if len(words) == 2:
        if name in (FORMAT, ORDER, ID):
            raise ValueError(f"priority key {item!r}: {name!r} takes no direction")
        return KeepKey(name, words[1] == "desc")
    return KeepKey(name, name not in (FORMAT, ID, ORDER))  # scores and length: higher first


def _with_order(keys: list[KeepKey]) -> list[KeepKey]:
    return keys if any(k.name == ORDER for k in keys) else [*keys, KeepKey(ORDER, False)]


@lru_cache(maxsize=4096)
def rendition(source: str | None, fmt: str | None) -> str:
    """The rendition of a document: its source's extension (compression suffixes dropped,
    lower case), else its ``format`` column."""
    name = (source or "").rsplit("/", 1)[-1].split("?", 1)[0].lower()
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    ext = name.rsplit(".", 1)[1] if "." in name else ""
    return ext or (fmt or "").lower()


def format_rank(sources: list, formats: list, order: list[str]) -> np.ndarray:
    """Position of each document's rendition in ``order`` (unlisted: the ``*`` slot, else last)."""
    position = {f.lower(): i for i, f in enumerate(order)}
    other = position.get("*", len(order))
    out = np.empty(len(sources), np.float64)
    for i, (s, f) in enumerate(zip(sources, formats, strict=True)):
        r = rendition(s, f)
        out[i] = position.get(r, position.get((f or "").lower(), other))
    return out


def _score_column(table: pa.Table, name: str) -> np.ndarray:
    """A score column as float64 (absent or not numeric: all NaN)."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    try:
        column = pc.cast(table[name], pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.full(table.num_rows, np.nan)
    return column.to_numpy().astype(np.float64) if table.num_rows else np.zeros(0)


def keep_values(table: pa.Table, policy: KeepPolicy, length: np.ndarray) -> dict[str, pa.Array]:
    """The map-side key columns of ``table`` (lower is better, null when unknown)."""
    out: dict[str, pa.Array] = {}
    for i, key in enumerate(policy.keep_keys()):
        if key.name in (ID, ORDER):
            continue
        if key.name == FORMAT:
            col = lambda c: table[c].to_pylist() if c in table.column_names else [None] * len(table)  # noqa: E731
            values = format_rank(col("source"), col("format"), policy.format_order)
        elif key.name == LENGTH:
            values = np.asarray(length, np.float64)
        else:
            values = _score_column(table, key.name)
        if key.descending:
            values = -values
        out[f"keep_{i}"] = pa.array(values, pa.float64(), from_pandas=True)  # NaN -> null
    return out


def keep_rank(
    keys: dict[str, np.ndarray],
    ids: pa.Array,
    part: np.ndarray,
    row: np.ndarray,
    policy: KeepPolicy,
) -> np.ndarray:
    """Rank of each document (0 = kept first) by the policy's keys, nulls last, ties by order."""
    columns: list[np.ndarray] = []  # most significant first
    for i, key in enumerate(policy.keep_keys()):
        if key.name == ORDER:
            columns += [part, row]
        elif key.name == ID:
            columns.append(pc.rank(ids, sort_keys="ascending").to_numpy())
        else:
            v = np.asarray(keys[f"keep_{i}"], np.float64).copy()
            v[np.isnan(v)] = np.inf
            columns.append(v)
    order = np.lexsort(columns[::-1]) if len(part) else np.zeros(0, np.int64)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


def members_rank(
    keys: dict[str, list[np.ndarray]],
    ids: list[pa.Array],
    members: np.ndarray,
    offsets: np.ndarray,
    policy: KeepPolicy,
) -> np.ndarray:
    """:func:`keep_rank` of a bucket's ``members`` (global row indices; ``offsets``: the first
    row of each part), from the per-part key and id pieces read for them: their rank among
    themselves orders them as their rank among all documents would."""
    part = np.searchsorted(offsets, members, side="right") - 1
    return keep_rank(
        {k: np.concatenate(v) for k, v in keys.items()},
        pa.concat_arrays(ids) if ids else pa.nulls(len(members), pa.string()),
        part,
        members - offsets[part],
        policy,
    )


def ranks_by_id(policy: KeepPolicy) -> bool:
    """Whether the policy ranks by ``id`` (else a reduce need not hold the ids to rank)."""
    return any(k.name == ID for k in policy.keep_keys())


def read_keys(table: pa.Table, policy: KeepPolicy) -> dict[str, np.ndarray]:
    """The key columns of a map output as float64 arrays (null -> NaN)."""
    return {
        name: table[name].to_numpy(zero_copy_only=False).astype(np.float64)
        for name in policy.key_columns()
    }


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
    if not len(values) or mask.all():
        return pa.nulls(len(rows), values.type)
    return values.take(pa.array(rows, pa.int64(), mask=mask))  # a null index takes a null


def join_state(table: pa.Table, state: pa.Table, columns: list[str]) -> pa.Table:
    """``table`` plus ``columns`` of the reduce ``state`` matched by ``id`` (null: no match)."""
    rows = lookup(table["id"], state["id"].combine_chunks())
    for name in columns:
        table = with_column(table, name, take_or_null(state[name].combine_chunks(), rows))
    return table


def has_duplicate_of(table: pa.Table) -> np.ndarray:
    """Rows that a kept copy elsewhere stands for: the decide mask of both dedup stages."""
    return table[DUPLICATE_OF].is_valid().to_numpy(zero_copy_only=False)
