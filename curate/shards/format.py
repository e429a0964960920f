"""The token-shard format: the one contract between curate/ and train/.

A shard is an Arrow IPC file (streaming format, memory-mappable) of fixed-length packed sequences:

- ``input_ids``: ``fixed_size_list<uint16|uint32>[seq_len + 1]`` (inputs and shifted targets
  come from the same row; uint16 when the vocabulary fits);
- provenance per sequence: ``doc_ids`` (list<string>, the documents whose tokens the row
  holds, in order), ``doc_starts`` (list<int32>, where each of them starts inside the row) and
  ``doc_offsets`` (list<int64>, the token offset inside that document of its first token here).

A directory of shards has ``manifest.json`` (``Manifest`` below). This module imports only
pyarrow, pydantic and the standard library, so train/ can use it without the rest of curate/.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.ipc as ipc
from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
Split = Literal["train", "val"]


def token_dtype(vocab_size: int) -> Literal["uint16", "uint32"]:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def shard_schema(seq_len: int, dtype: str) -> pa.Schema:
    value_type = {"uint16": pa.uint16(), "uint32": pa.uint32()}[dtype]
    return pa.schema(
        [
            pa.field("input_ids", pa.list_(value_type, seq_len + 1), nullable=False),
            pa.field("doc_ids", pa.list_(pa.string())),
            pa.field("doc_starts", pa.list_(pa.int32())),
            pa.field("doc_offsets", pa.list_(pa.int64())),
        ]
    )


class ShardFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # relative to the manifest's directory
    sequences: int
    tokens: int
    sha256: str


class SplitInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[ShardFile] = Field(default_factory=list)
    sequences: int = 0
    tokens: int = 0
    tokens_per_domain: dict[str, int] = Field(default_factory=dict)


class TokenizerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # relative to the manifest's directory, or absolute
    sha256: str
    vocab_size: int
    model_type: str = "bpe"
    bos_id: int
    eos_id: int
    pad_id: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    seq_len: int
    dtype: Literal["uint16", "uint32"]
    tokenizer: TokenizerInfo
    splits: dict[str, SplitInfo]
    mixture_target: dict[str, float] = Field(default_factory=dict)
    mixture_achieved: dict[str, float] = Field(default_factory=dict)
    source_run: str = ""
    seed: int = 0


class ShardFormatError(ValueError):
    """A shard directory, manifest or file does not match the format or what was expected."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_bytes(manifest: Manifest) -> bytes:
    """The bytes of ``manifest.json``."""
    return (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def write_manifest(manifest: Manifest, directory: str | Path) -> Path:
    path = Path(directory) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(manifest_bytes(manifest))
    tmp.replace(path)
    return path


def load_manifest(directory: str | Path) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        raise ShardFormatError(f"no {MANIFEST_NAME} in {directory}")
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except ValueError as e:
        raise ShardFormatError(f"{path}: invalid manifest: {e}") from e
    if manifest.format_version != FORMAT_VERSION:
        raise ShardFormatError(
            f"{path}: format_version {manifest.format_version}, expected {FORMAT_VERSION}"
        )
    return manifest


def open_shard(path: str | Path) -> pa.Table:
    """Memory-map one shard file (zero-copy; the OS pages it in on demand).

    Shards are written in the IPC streaming format (``datasets.Dataset.from_file`` reads only
    that); a file in the IPC file format (``ARROW1`` magic, Feather v2) is read as well.
    """
    try:
        source = pa.memory_map(str(path), "r")
        if source.read(6) == b"ARROW1":
            source.seek(0)
            return ipc.open_file(source).read_all()
        source.seek(0)
        return ipc.open_stream(source).read_all()
    except (OSError, pa.ArrowInvalid) as e:
        raise ShardFormatError(f"{path}: not a readable Arrow IPC shard: {e}") from e


def check_shard(table: pa.Table, manifest: Manifest, path: str | Path) -> None:
    expected = shard_schema(manifest.seq_len, manifest.dtype).field("input_ids").type
    actual = table.schema.field("input_ids").type if "input_ids" in table.column_names else None
    if actual != expected:
        raise ShardFormatError(f"{path}: input_ids is {actual}, manifest says {expected}")
