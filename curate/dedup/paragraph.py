"""Paragraph dedup (dolma / CCNet style): drop paragraphs that occur in many documents of a run.

Navigation, licence boilerplate and site headers repeated across pages survive document-level
dedup because the pages around them differ. A paragraph is a run of text between blank lines;
its key is the xxh3-64 hash of its words (lower-cased, whitespace collapsed); paragraphs with
fewer than ``min_chars`` such characters are never touched.

map (per part) -> ``id: string, paragraph_hashes: large_list<uint64>`` (distinct per document).
reduce (once) -> state ``paragraph_hash: uint64, docs: int64``: every paragraph found in at least
``min_docs`` documents. score -> the part with those paragraphs cut out of ``text`` (the kept
paragraphs joined by one blank line) plus ``paragraphs_removed: int32``,
``paragraph_bytes_removed: int64`` (UTF-8 bytes cut) and ``paragraphs_left: int32``; a document
with nothing left keeps its text and is removed with the reason ``only_repeated_paragraphs``.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from curate.dedup.common import read_columns, with_column
from curate.stage import GlobalStage, Rules

REASON = "only_repeated_paragraphs"
HASHES = "paragraph_hashes"
REMOVED = "paragraphs_removed"
BYTES_REMOVED = "paragraph_bytes_removed"
LEFT = "paragraphs_left"
STATE_SCHEMA = pa.schema([pa.field("paragraph_hash", pa.uint64()), pa.field("docs", pa.int64())])
_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")


class ParagraphDedupConfig(BaseModel):
    """How often a paragraph must repeat, and how long it must be, to be cut."""

    model_config = ConfigDict(extra="forbid")

    min_docs: int = Field(3, ge=2, description="cut paragraphs found in at least this many docs")
    min_chars: int = Field(
        40, ge=1, description="shorter paragraphs (normalised characters) are never cut"
    )
    skip_domains: list[str] = Field(
        default_factory=list, description="domains left as they are (not counted either)"
    )


def paragraphs(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the paragraphs of ``text`` (blank-line separated)."""
    spans, start = [], 0
    for m in _BREAK.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def paragraph_key(paragraph: str, min_chars: int) -> int | None:
    """Hash of a paragraph's normalised words (None when shorter than ``min_chars``)."""
    norm = " ".join(paragraph.lower().split())
    if len(norm) < min_chars:
        return None
    return xxhash.xxh3_64_intdigest(norm.encode("utf-8", "surrogatepass"))


def _skipped(table: pa.Table, cfg: ParagraphDedupConfig) -> np.ndarray:
    if not cfg.skip_domains or "domain" not in table.column_names:
        return np.zeros(table.num_rows, bool)
    return pc.is_in(table["domain"], pa.array(cfg.skip_domains)).to_numpy(zero_copy_only=False)


def map_part(table: pa.Table, cfg: ParagraphDedupConfig) -> pa.Table:
    """Distinct paragraph hashes of each document."""
    skipped = _skipped(table, cfg)
    lists = []
    for text, skip in zip(table["text"].to_pylist(), skipped.tolist(), strict=True):
        keys = (
            set()
            if skip or not text
            else {paragraph_key(text[s:e], cfg.min_chars) for s, e in paragraphs(text)}
        )
        keys.discard(None)
        lists.append(sorted(keys))
    return pa.table({"id": table["id"], HASHES: pa.array(lists, pa.large_list(pa.uint64()))})


def reduce_parts(urls: list[str], cfg: ParagraphDedupConfig) -> pa.Table:
    """Count the documents holding each paragraph; keep those found in ``min_docs`` or more."""
    counts: list[np.ndarray] = []
    for url in urls:
        column = read_columns(url, [HASHES])[HASHES].combine_chunks()
        counts.append(column.flatten().to_numpy())
    hashes = np.concatenate(counts) if counts else np.zeros(0, np.uint64)
    values, docs = np.unique(hashes, return_counts=True)
    frequent = docs >= cfg.min_docs
    return pa.table(
        {"paragraph_hash": pa.array(values[frequent], pa.uint64()), "docs": docs[frequent]},
        schema=STATE_SCHEMA,
    )


def score(table: pa.Table, state: pa.Table, cfg: ParagraphDedupConfig) -> pa.Table:
    """Cut the repeated paragraphs out of each text; count what was cut."""
    repeated = set(state["paragraph_hash"].to_pylist())
    skipped = _skipped(table, cfg)
    texts, n_removed, n_bytes, n_left = [], [], [], []
    for text, skip in zip(table["text"].to_pylist(), skipped.tolist(), strict=True):
        spans = [] if skip or not text or not repeated else paragraphs(text)
        is_cut = [paragraph_key(text[s:e], cfg.min_chars) in repeated for s, e in spans]
        kept = [text[s:e] for (s, e), c in zip(spans, is_cut, strict=True) if not c]
        cut_bytes = sum(
            len(text[s:e].encode("utf-8", "surrogatepass"))
            for (s, e), c in zip(spans, is_cut, strict=True)
            if c
        )
        # nothing left: the text stays as it was and the document is removed
        texts.append("\n\n".join(kept) if kept and cut_bytes else text)
        n_removed.append(sum(is_cut))
        n_bytes.append(cut_bytes)
        n_left.append(len(kept))
    table = with_column(table, "text", pa.array(texts, pa.large_string()))
    table = with_column(table, REMOVED, pa.array(n_removed, pa.int32()))
    table = with_column(table, BYTES_REMOVED, pa.array(n_bytes, pa.int64()))
    return with_column(table, LEFT, pa.array(n_left, pa.int32()))


def rules(table: pa.Table, cfg: ParagraphDedupConfig) -> Rules:
    cut = table[REMOVED].to_numpy(zero_copy_only=False) > 0
    return {REASON: cut & (table[LEFT].to_numpy(zero_copy_only=False) == 0)}


PARAGRAPH_DEDUP = GlobalStage(
    name="paragraph_dedup",
    config=ParagraphDedupConfig,
    map=map_part,
    reduce=reduce_parts,
    score=score,
    rules=rules,
)
