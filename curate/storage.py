"""Atomic, resumable part files on any fsspec filesystem (local paths or URLs).

Every stage writes ``<run>/<stage>/part-NNNNN.parquet`` (kept documents), ``.removed.parquet``,
``.quarantine.parquet`` and last ``part-NNNNN.done.json``: the input fingerprint, the config
hash and the part's counters. A rerun skips a part whose marker matches. Files are written to a
temporary name and renamed, so a killed run never leaves a half-written part that looks done.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

# Fixed writer options so the same table always gives the same bytes.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "row_group_size": 64 * 1024,
}


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` and the path inside it."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local filesystem (plain paths and ``file://``)."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols


# What tells two versions of a remote file apart, per fsspec backend (local, S3, GCS, memory).
_VERSION_KEYS = ("size", "mtime", "LastModified", "ETag", "md5Hash", "updated", "created")


def local_copy(url: str, cache_dir: str | Path | None = None) -> str:
    """A local path holding the file at ``url``, for readers that open only local files
    (SentencePiece, fastText): the path itself on the local filesystem, else a copy fetched once
    per machine into ``cache_dir`` (default ``$SLUICE_CACHE`` or ``~/.cache/sluice/remote``),
    named by the URL and the file's size and modification stamp."""
    fs, path = filesystem(url)
    if is_local_fs(fs):
        return path
    info = fs.info(path)
    stamp = "|".join(str(info.get(k, "")) for k in _VERSION_KEYS)
    key = hashlib.blake2b(f"{url}|{stamp}".encode(), digest_size=16).hexdigest()
    root = Path(
        cache_dir or os.environ.get("SLUICE_CACHE") or Path.home() / ".cache" / "sluice" / "remote"
    )
    local = root / f"{key}-{path.rsplit('/', 1)[-1]}"
    if not local.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f"{local.name}.tmp-{uuid.uuid4().hex}")
        with fs.open(path, "rb") as src, open(tmp, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
        os.replace(tmp, local)  # atomic: tasks on the same machine may fetch it at once
    return str(local)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def write_bytes_atomic(data: bytes, url: str) -> None:
    fs, path = filesystem(url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    """``table`` as the parquet bytes every step writes (``PARQUET_OPTIONS``; smaller row
    groups for a file read by ranges). A table without rows is written without row groups
    (schema only): readers that size their batches by the first row group (``datasets``'
    parquet loader) skip it instead of failing."""
    sink = pa.BufferOutputStream()
    if table.num_rows == 0:
        options = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
        pq.ParquetWriter(sink, table.schema, **options).close()
    else:
        options = dict(PARQUET_OPTIONS)
        if row_group_size is not None:
            options["row_group_size"] = row_group_size
        pq.write_table(table, sink, **options)
    return sink.getvalue().to_pybytes()


@dataclass
class TableSlices:
    """A table given as consecutive row slices (``schema``), so that a step that builds a
    large table (a dedup state) never holds it whole: :func:`write_table_atomic` writes the
    slices into one parquet file as they come, the same bytes as ``parquet_bytes`` of the
    whole table."""

    schema: pa.Schema
    slices: Iterable[pa.Table]

    def table(self) -> pa.Table:
        """The whole table (tests, small runs)."""
        return pa.concat_tables([self.schema.empty_table(), *self.slices]).combine_chunks()


def as_table(content: pa.Table | TableSlices) -> pa.Table:
    return content.table() if isinstance(content, TableSlices) else content


class _HashingWriter:
    """A binary file that hashes and counts what goes through it."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.sha256, self.size, self.closed = raw, hashlib.sha256(), 0, False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += view.nbytes
        return self.raw.write(view)

    def flush(self) -> None:
        self.raw.flush()

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.closed = True


def _row_group_tables(slices: Iterable[pa.Table], rows: int) -> Iterable[pa.Table]:
    """The slices regrouped into contiguous tables of a multiple of ``rows`` rows (the last
    any size), so that a writer cuts the row groups the whole table would get."""
    pending: list[pa.Table] = []
    held = 0
    for piece in slices:
        pending.append(piece)
        held += piece.num_rows
        if held >= rows:
            whole = pa.concat_tables(pending).combine_chunks()
            cut = held - held % rows
            yield whole.slice(0, cut)
            pending, held = [whole.slice(cut)], held - cut
    if held:
        yield pa.concat_tables(pending).combine_chunks()


def write_table_atomic(content: pa.Table | TableSlices, url: str) -> dict[str, Any]:
    """Write a table (whole or in slices) as parquet, atomically; returns its sha256 and size.
    A sliced table is written as its slices come (memory: one row group's worth)."""
    if isinstance(content, pa.Table):
        data = parquet_bytes(content)
        write_bytes_atomic(data, url)
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    fs, path = filesystem(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    options = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
    rows = PARQUET_OPTIONS["row_group_size"]
    with fs.open(tmp, "wb") as raw:
        sink = _HashingWriter(raw)
        writer = pq.ParquetWriter(sink, content.schema, **options)
        for table in _row_group_tables(content.slices, rows):
            writer.write_table(table.cast(content.schema), row_group_size=rows)
        writer.close()  # no rows: no row group, as parquet_bytes writes an empty table
    fs.mv(tmp, path)
    return {"sha256": sink.sha256.hexdigest(), "size": sink.size}


def read_parquet(url: str) -> pa.Table:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return pq.read_table(f)


def read_parquet_rows(url: str, filters: list[tuple[str, str, Any]]) -> pa.Table:
    """The rows of a parquet file that pass ``filters`` (pyarrow's; row groups whose
    statistics rule them out are not read)."""
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, filters=filters)


def read_columns(url: str, columns: list[str]) -> pa.Table:
    """The given columns of a parquet file (those it has)."""
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        names = pq.read_schema(f).names
        f.seek(0)
        return pq.read_table(f, columns=[c for c in columns if c in names])


def write_json_atomic(obj: Any, url: str) -> None:
    write_bytes_atomic((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), url)


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return f.read()


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def config_hash(cfg: BaseModel | dict | None) -> str:
    """Hash of a config's canonical JSON (key order does not matter)."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else (cfg or {})
    return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=16).hexdigest()


def name_bytes(name: str) -> bytes:
    """A path or URL as bytes, for hashing: a local file name that is not valid UTF-8 (held by
    Python as surrogate escapes) gives back its original bytes instead of raising."""
    return name.encode("utf-8", "surrogateescape")


def fingerprint(urls: Iterable[str], content: bool = False) -> str:
    """Fingerprint of input files: path, size and mtime (or full content when ``content``)."""
    h = hashlib.blake2b(digest_size=16)
    for url in sorted(urls):
        fs, path = filesystem(url)
        h.update(name_bytes(url))
        if content:
            with fs.open(path, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
        else:
            info = fs.info(path)
            h.update(
                f"{info.get('size')}:{info.get('mtime', info.get('LastModified', ''))}".encode()
            )
    return h.hexdigest()


def done_marker_matches(marker_url: str, input_fp: str, cfg_hash: str) -> bool:
    if not exists(marker_url):
        return False
    try:
        marker = read_json(marker_url)
    except (OSError, ValueError):
        return False
    return marker.get("input_fingerprint") == input_fp and marker.get("config_hash") == cfg_hash
