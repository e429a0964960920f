"""Read a finished (or half-finished) run directory: stages, counters, part files.

Every path comes from :class:`curate.layout.RunLayout` (no globbing). Every reader tolerates
absence: a run that stopped early (it has ``config.json`` and ``parts.json`` from its first
moment) still gets a report of what it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

import pyarrow as pa
import pyarrow.parquet as pq

from curate.layout import RunLayout
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


def read_columns(urls: Iterable[str], columns: list[str]) -> pa.Table | None:
    """The given columns (those that exist) of parquet files, concatenated; None if none exist."""
    tables = []
    for url in urls:
        fs, path = filesystem(url)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            have = [c for c in columns if c in pf.schema_arrow.names]
            if have:
                tables.append(pf.read(columns=have))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def has_column(urls: Iterable[str], column: str) -> bool:
    for url in urls:
        fs, path = filesystem(url)
        with fs.open(path, "rb") as f:
            if column in pq.ParquetFile(f).schema_arrow.names:
                return True
    return False
