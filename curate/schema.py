"""The document record: one Arrow schema for every stage, plus the quarantine record.

Stages add score columns (``quality_*``, ``toxicity``, ``pii_*``, ``minhash_cluster``, ...) to
batches of this schema; the base columns below are always present and never renamed.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

DOC_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),  # stable: hash of source + offset
    pa.field("text", pa.large_string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # path or URL of the raw input
    pa.field("offset", pa.int64(), nullable=False),  # record index inside the source (0 if whole)
    pa.field("domain", pa.string(), nullable=False),  # web, pdf, code, prose, ... from config
    pa.field("format", pa.string(), nullable=False),  # html, pdf, code, text, warc, jsonl, ...
    pa.field("lang", pa.string()),  # filled by the langid stage
    pa.field("lang_score", pa.float32()),
    # a JSONL record's other keys / a Parquet row's other columns (the input's own id, url, ...)
    # as one JSON object (sorted keys); an HTML page's SECTION_OF / CODE_LINES; null otherwise. One column,
    # so every part has the same schema whatever fields its inputs carry.
    pa.field("meta", pa.string()),
]
DOC_SCHEMA = pa.schema(DOC_FIELDS)
# meta key of an HTML page that is a later section of a multi-page document: the href of the
# document's start (curate.readers.html.section_of); the length minima do not judge such a page
SECTION_OF = "section_of"
# meta key of an HTML page's code/command listings (<pre> blocks): [[start, end), ...] line
# ranges of its text (curate.readers.html.code_lines); the heuristics' prose rules skip them
CODE_LINES = "code_lines"

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # short machine-readable reason
        pa.field("detail", pa.string()),  # the error message, truncated
    ]
)

# Removed documents keep every column of the batch plus these two.


def doc_id(source: str, offset: int = 0) -> str:
    """Stable id of a document: 16 hex chars of blake2b(source, offset)."""
    return hashlib.blake2b(f"{source}\x00{offset}".encode(), digest_size=8).hexdigest()


def empty_docs() -> pa.Table:
    return DOC_SCHEMA.empty_table()


def docs_table(rows: list[dict]) -> pa.Table:
    """Build a document batch from dicts with the base fields (missing optional ones → null)."""
    return pa.Table.from_pylist(rows, schema=DOC_SCHEMA)


def quarantine_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)
