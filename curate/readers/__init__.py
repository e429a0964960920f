"""Readers: list raw inputs (local paths or fsspec URLs), split them into parts, extract text.

Interface used by flows/ (signatures are the contract):

- ``InputSpec`` (pydantic): one configured input: ``path`` (dir, file, glob or URL), ``format``
  (``auto|html|pdf|code|text|fortune|warc|jsonl|parquet``), ``domain`` (optional: overrides the
  domain rules), ``glob``, ``text_field`` (jsonl/parquet), ``rot13`` (None: auto-detect).
- ``DomainRule`` (``pattern``: fnmatch glob, or regex after ``re:``; ``domain``) and
  ``DEFAULT_DOMAIN_RULES``.
- ``InputFile``: one raw file to read: ``url, format, domain, size, text_field, rot13``.
- ``list_inputs(specs, domain_rules=None, skipped=None) -> list[InputFile]``: sorted,
  deterministic; entries below the inputs that are not listed (unreadable folders, broken links,
  link loops, Sluice run directories ...) are logged and appended to ``skipped`` as
  ``SkippedEntry`` (path, reason, detail).
- ``plan_parts(files, files_per_part, bytes_per_part) -> list[list[InputFile]]``: deterministic.
- ``extract_part(files, cfg: ExtractConfig) -> ExtractResult`` (a ``curate.stage.StageResult``
  of stage ``extract`` plus ``counters``): documents of ``curate.schema.DOC_SCHEMA``; empty
  results removed with a reason; unreadable input quarantined with a reason; never raises for
  bad input. Details in :mod:`curate.readers.extract`.
"""

from curate.readers.extract import STAGE, ExtractConfig, ExtractResult, extract_part
from curate.readers.files import (
    DEFAULT_DOMAIN_RULES,
    DomainRule,
    InputFile,
    InputSpec,
    SkippedEntry,
    guess_format,
    list_inputs,
    plan_parts,
    skipped_report,
)
from curate.readers.html import HtmlOptions

__all__ = [
    "DEFAULT_DOMAIN_RULES",
    "STAGE",
    "DomainRule",
    "ExtractConfig",
    "ExtractResult",
    "HtmlOptions",
    "InputFile",
    "InputSpec",
    "SkippedEntry",
    "extract_part",
    "guess_format",
    "list_inputs",
    "plan_parts",
    "skipped_report",
]
