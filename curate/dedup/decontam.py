"""Decontamination: find documents that share a word n-gram (13 by default) with evaluation data.

Evaluation files are read once per configuration (fsspec paths or URLs; ``.gz``/``.zst`` etc.
decompressed by suffix): ``.jsonl``/``.json`` take the ``fields`` of each record, ``.parquet``
the ``fields`` columns, anything else is one UTF-8 text. Words and n-gram hashes are those of
near dedup (:mod:`curate.dedup.text`); texts shorter than ``ngram`` words give no n-gram.

Columns: ``contamination_ngrams`` (int32, distinct n-grams of the document found in any eval
file) and ``contaminated_by`` (list<string>, the eval files matched, in config order). Rule
``eval_contamination`` (with ``action: drop``) removes documents with at least ``min_matches``
shared n-grams; ``action: flag`` only annotates. :func:`contamination_counts` gives documents
per eval file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from curate.dedup.text import slices_by_bytes, text_shingles
from curate.stage import FILE_OPTION, Rules, Stage
from curate.storage import filesystem

REASON = "eval_contamination"
NGRAMS = "contamination_ngrams"
MATCHED = "contaminated_by"
# text bytes hashed at once: ~10 bytes of memory per byte (a 32 MB part at once: ~2 GB)
BATCH_BYTES = 1 << 21


class DecontamConfig(BaseModel):
    """Evaluation files to protect and what to do with documents overlapping them."""

    model_config = ConfigDict(extra="forbid")

    eval_files: list[str] = Field(
        default_factory=list, description="paths or URLs", json_schema_extra=FILE_OPTION
    )
    fields: list[str] = Field(
        default_factory=lambda: ["text"], description="jsonl/parquet fields holding eval text"
    )
    ngram: int = Field(13, ge=1)
    lowercase: bool = True
    min_matches: int = Field(
        1, ge=1, description="shared n-grams that make a document contaminated"
    )
    action: Literal["drop", "flag"] = "drop"


def _read_texts(url: str, fields: tuple[str, ...]) -> list[str]:
    fs, path = filesystem(url)
    name = path.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(suffix)
    if name.endswith(".parquet"):
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        return [
            str(v)
            for field in fields
            if field in table.column_names
            for v in table[field].to_pylist()
            if v is not None
        ]
    with fs.open(path, "rb", compression="infer") as f:
        raw = f.read().decode("utf-8", "replace")
    if name.endswith((".jsonl", ".json")):
        records: Iterable = (
            (json.loads(line) for line in raw.splitlines() if line.strip())
            if name.endswith(".jsonl")
            else _json_records(json.loads(raw))
        )
        return [
            str(rec[field])
            for rec in records
            if isinstance(rec, dict)
            for field in fields
            if rec.get(field) is not None
        ]
    return [raw]


def _json_records(obj: object) -> list:
    return obj if isinstance(obj, list) else [obj]


@lru_cache(maxsize=8)
def eval_ngrams(
    files: tuple[str, ...], fields: tuple[str, ...], ngram: int, lowercase: bool
) -> tuple[np.ndarray, ...]:
    """Sorted distinct n-gram hashes of each eval file."""
    out = []
    for url in files:
        texts = _read_texts(url, fields)
        sh = text_shingles(pa.array(texts, pa.large_string()), ngram, lowercase, short=False)
        out.append(np.unique(sh.hashes))
    return tuple(out)


def score(table: pa.Table, cfg: DecontamConfig) -> pa.Table:
    """Add ``contamination_ngrams`` and ``contaminated_by``. The part's texts are hashed
    ``BATCH_BYTES`` at a time (a document's counts do not depend on the batch)."""
    index = eval_ngrams(tuple(cfg.eval_files), tuple(cfg.fields), cfg.ngram, cfg.lowercase)
    n = table.num_rows
    texts = table["text"]
    counts = np.zeros(n, np.int32)
    matched = np.zeros((len(index), n), bool)
    for start, stop in slices_by_bytes(texts, BATCH_BYTES):
        sh = text_shingles(texts.slice(start, stop - start), cfg.ngram, cfg.lowercase, short=False)
        doc = sh.doc_of()
        any_hit = np.zeros(len(sh.hashes), bool)
        for f, hashes in enumerate(index):
            hit = np.isin(sh.hashes, hashes, assume_unique=False)
            any_hit |= hit
            matched[f, start + doc[hit]] = True
        counts[start:stop] = np.bincount(doc[any_hit], minlength=stop - start)
    names = np.asarray(cfg.eval_files, dtype=object)
    lists = [names[matched[:, i]].tolist() for i in range(n)]
    return table.append_column(NGRAMS, pa.array(counts, pa.int32())).append_column(
        MATCHED, pa.array(lists, pa.list_(pa.string()))
    )


def rules(table: pa.Table, cfg: DecontamConfig) -> Rules:
    if cfg.action == "flag":
        return {}
    return {REASON: pc.greater_equal(table[NGRAMS], cfg.min_matches).to_numpy(zero_copy_only=False)}


def contamination_counts(table: pa.Table, cfg: DecontamConfig) -> dict[str, int]:
    """Documents of a scored table (kept + removed) that share n-grams with each eval file."""
    enough = pc.greater_equal(table[NGRAMS], cfg.min_matches)
    flat = pc.list_flatten(table.filter(enough)[MATCHED])
    counts = {name: 0 for name in cfg.eval_files}
    for name in flat.to_pylist():
        counts[name] += 1
    return counts


DECONTAM = Stage(name="decontam", config=DecontamConfig, score=score, rules=rules)
