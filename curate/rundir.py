"""Read a finished (or half-finished) run directory: stages, counters, part files.

Every path comes from :class:`curate.layout.RunLayout` (no globbing). Every reader tolerates
absence: a run that stopped early (it has ``config.json`` and ``parts.json`` from its first
moment) still gets a report of what it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.layout import RunLayout
from curate.memory import release_unused
from curate.stage import StageStats
from curate.storage import exists, filesystem, read_json

_STATS_KEYS = {f.name for f in fields(StageStats)}


def _stats(stage: str, counts: dict) -> StageStats:
    return StageStats.from_dict(
        {**{k: v for k, v in counts.items() if k in _STATS_KEYS}, "stage": stage}
    )


def part_files(run_dir: str, stage: str, kind: str = "kept") -> list[str]:
    """URLs of one kind of part file (kept, removed, quarantine) of a stage, in part order."""
    return RunLayout(run_dir).part_files(stage, kind)


def _from_markers(layout: RunLayout, stage: str) -> StageStats | None:
    """The counters of ``stage`` merged over the done markers it has (None: none yet)."""
    total: StageStats | None = None
    for i in range(layout.n_parts()):
        url = layout.marker(stage, i)
        if exists(url):
            s = _stats(stage, read_json(url)["stats"])
            total = s if total is None else total.merge(s)
    return total


def load_stats(run_dir: str) -> list[StageStats]:
    """Per-stage counters in pipeline order: the finished run's ``stats.json`` (seconds from
    ``timings.json``), else merged from the stages' done markers."""
    layout = RunLayout(run_dir)
    order = layout.document_stages()
    if exists(layout.stats):
        counts = read_json(layout.stats)["stages"]
        seconds = (
            read_json(layout.timings).get("stage_seconds", {}) if exists(layout.timings) else {}
        )
        stats = [_stats(name, c) for name, c in counts.items()]
        for s in stats:
            s.seconds = float(seconds.get(s.stage, 0.0))
        rank = {name: i for i, name in enumerate(order)}
        return sorted(stats, key=lambda s: rank.get(s.stage, len(rank)))
    return [s for s in (_from_markers(layout, stage) for stage in order) if s is not None]


def stage_order(run_dir: str) -> list[str]:
    """Document stages with part files, in pipeline order."""
    layout = RunLayout(run_dir)
    return [s for s in layout.document_stages() if exists(layout.part(s, 0))]


def last_doc_stage(run_dir: str) -> str | None:
    """The last stage in pipeline order that has kept-document parts."""
    stages = stage_order(run_dir)
    return stages[-1] if stages else None


def utf8_bytes(column: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
    """The UTF-8 byte length of every value of a string column (0 for null), as int64."""
    import pyarrow.compute as pc

    return pc.binary_length(column.cast(pa.large_binary())).fill_null(0)


def read_columns(
    urls: Iterable[str], columns: list[str], lengths: Iterable[str] = ()
) -> pa.Table | None:
    """The given columns (those that exist) of parquet files, concatenated; None if none exist.
    ``lengths``: string columns read one file at a time and kept only as their UTF-8 byte
    lengths, named ``<column>_bytes`` (a run's texts never sit in memory at once)."""
    lengths = list(lengths)
    tables = []
    for url in urls:
        fs, path = filesystem(url)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            have = [c for c in columns if c in names]
            sized = [c for c in lengths if c in names]
            if have or sized:
                table = pf.read(columns=have + [c for c in sized if c not in have])
                for c in sized:
                    table = table.append_column(f"{c}_bytes", utf8_bytes(table[c]))
                tables.append(table.select([*have, *(f"{c}_bytes" for c in sized)]))
                if sized:  # the texts are gone: give their pages back before the next file
                    del table
                    release_unused()
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def take_rows(urls: Iterable[str], column: str, rows: np.ndarray) -> list[Any]:
    """Values of ``column`` at the global row indices ``rows`` (over the files in order,
    concatenated), in the order given; read one file at a time."""
    rows = np.asarray(rows, np.int64)
    out: list[Any] = [None] * len(rows)
    start = 0
    for url in urls:
        fs, path = filesystem(url)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            n = pf.metadata.num_rows
            mine = np.flatnonzero((rows >= start) & (rows < start + n))
            if len(mine) and column in pf.schema_arrow.names:
                values = pf.read(columns=[column])[column].take(pa.array(rows[mine] - start))
                for k, v in zip(mine.tolist(), values.to_pylist(), strict=True):
                    out[k] = v
                del values
                release_unused()  # the part's column: its pages back
        start += n
    return out


def has_column(urls: Iterable[str], column: str) -> bool:
    for url in urls:
        fs, path = filesystem(url)
        with fs.open(path, "rb") as f:
            if column in pq.ParquetFile(f).schema_arrow.names:
                return True
    return False
