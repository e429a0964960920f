"""Read a finished (or half-finished) run directory: stages, counters, part files.

Layout (written by the flow through ``curate.storage``): ``<run>/<stage>/part-NNNNN.parquet``
(kept), ``.removed.parquet``, ``.quarantine.parquet``, ``.done.json``; ``<run>/stats.json``;
shards under ``<run>/shards/``. Every reader tolerates absence: a run that stopped early still
gets a report of what it has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import fields

import pyarrow as pa
import pyarrow.parquet as pq

from curate.stage import StageStats
from curate.storage import exists, filesystem, join, read_json

STATS_NAME = "stats.json"
CONFIG_NAME = "config.json"
TIMINGS_NAME = "timings.json"
PART_KINDS = ("kept", "removed", "quarantine")
_SUFFIX = {"kept": ".parquet", "removed": ".removed.parquet", "quarantine": ".quarantine.parquet"}
_PART = re.compile(r"part-\d+")
_STATS_KEYS = {f.name for f in fields(StageStats)}


def _stats_from_dict(d: dict) -> StageStats | None:
    if not isinstance(d, dict) or "stage" not in d or "docs_in" not in d:
        return None
    return StageStats.from_dict({k: v for k, v in d.items() if k in _STATS_KEYS})


def _stats_entries(data: object) -> list[dict]:
    """Stage dicts from the shapes stats.json may take: a list, {stages: ...} or {name: dict}."""
    if isinstance(data, dict) and "stages" in data:
        data = data["stages"]
    if isinstance(data, dict):
        data = [dict(v, stage=v.get("stage", k)) for k, v in data.items() if isinstance(v, dict)]
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def stage_dirs(run_dir: str) -> list[str]:
    """Names of the sub-directories of ``run_dir`` that hold part files."""
    fs, path = filesystem(run_dir)
    if not fs.exists(path):
        return []
    names = []
    for entry in fs.ls(path, detail=True):
        if entry.get("type") != "directory":
            continue
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if fs.glob(f"{entry['name'].rstrip('/')}/part-*"):
            names.append(name)
    return sorted(names)


def part_files(run_dir: str, stage: str, kind: str = "kept") -> list[str]:
    """URLs of one kind of part file (kept, removed, quarantine) of a stage, in part order."""
    fs, path = filesystem(run_dir)
    suffix = _SUFFIX[kind]
    found = fs.glob(f"{path.rstrip('/')}/{stage}/part-*{suffix}")
    out = []
    for p in sorted(found):
        name = p.rsplit("/", 1)[-1]
        if kind == "kept" and (
            name.endswith(".removed.parquet") or name.endswith(".quarantine.parquet")
        ):
            continue
        if _PART.fullmatch(name[: -len(suffix)]):
            out.append(join(run_dir, stage, name))
    return out


def _merge_markers(run_dir: str, stage: str) -> StageStats | None:
    fs, path = filesystem(run_dir)
    total: StageStats | None = None
    for p in sorted(fs.glob(f"{path.rstrip('/')}/{stage}/part-*.done.json")):
        try:
            marker = read_json(join(run_dir, stage, p.rsplit("/", 1)[-1]))
        except (OSError, ValueError):
            continue
        inner = (
            marker.get("stats", marker.get("counters", marker))
            if isinstance(marker, dict)
            else None
        )
        if isinstance(inner, dict):
            inner = dict(inner, stage=inner.get("stage", stage))
        s = _stats_from_dict(inner) if isinstance(inner, dict) else None
        if s is not None:
            total = s if total is None else total.merge(s)
    return total


def configured_order(run_dir: str) -> list[str]:
    """Stage names in the order of the run's saved config (``config.json``: ``stages``)."""
    url = join(run_dir, CONFIG_NAME)
    try:
        data = read_json(url) if exists(url) else {}
    except (OSError, ValueError):
        return []
    cfg = data.get("config", data) if isinstance(data, dict) else {}
    stages = cfg.get("stages", []) if isinstance(cfg, dict) else []
    return [s["name"] if isinstance(s, dict) else str(s) for s in stages]


def _pipeline_sorted(stats: list[StageStats], run_dir: str) -> list[StageStats]:
    """Stages missing from the saved config (extract) first, then the config's order; without
    a config, as given."""
    order = configured_order(run_dir)
    if not order:
        return stats
    rank = {name: i for i, name in enumerate(order)}
    return sorted(stats, key=lambda s: rank.get(s.stage, -1))


def _add_timings(stats: list[StageStats], run_dir: str) -> None:
    """Fill missing seconds from ``timings.json`` (``stage_seconds``), if the run wrote one."""
    url = join(run_dir, TIMINGS_NAME)
    if not exists(url) or all(s.seconds for s in stats):
        return
    try:
        seconds = read_json(url).get("stage_seconds", {})
    except (OSError, ValueError, AttributeError):
        return
    for s in stats:
        if not s.seconds and isinstance(seconds.get(s.stage), int | float):
            s.seconds = float(seconds[s.stage])


def load_stats(run_dir: str) -> list[StageStats]:
    """Per-stage counters in pipeline order: ``stats.json``, else merged part done markers.

    The order comes from the saved config when there is one (stats.json may have its keys
    sorted), else from stats.json; from markers alone, by documents in, largest first.
    """
    url = join(run_dir, STATS_NAME)
    if exists(url):
        try:
            entries = _stats_entries(read_json(url))
        except (OSError, ValueError):
            entries = []
        stats = [s for s in (_stats_from_dict(e) for e in entries) if s is not None]
        if stats:
            _add_timings(stats, run_dir)
            return _pipeline_sorted(stats, run_dir)
    merged = [s for s in (_merge_markers(run_dir, st) for st in stage_dirs(run_dir)) if s]
    return _pipeline_sorted(sorted(merged, key=lambda s: (-s.docs_in, s.stage)), run_dir)


def stage_order(run_dir: str) -> list[str]:
    """Document stages with part files, in pipeline order (those in the counters; without
    counters, every directory with part files, by name)."""
    dirs = stage_dirs(run_dir)
    ordered = [s.stage for s in load_stats(run_dir) if s.stage in dirs]
    return ordered or dirs


def last_doc_stage(run_dir: str) -> str | None:
    """The last stage in pipeline order that has kept-document parts."""
    for stage in reversed(stage_order(run_dir)):
        if part_files(run_dir, stage, "kept"):
            return stage
    return None


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
