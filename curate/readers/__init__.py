"""Readers: list raw inputs (local paths or fsspec URLs), split them into parts, extract text.

Interface used by flows/ (the readers helper fills in the bodies; signatures are the contract):

- ``InputSpec`` (pydantic): one configured input: ``path`` (dir, file, glob or URL), ``format``
  (``auto|html|pdf|code|text|fortune|warc|jsonl|parquet``), ``domain`` (optional: overrides the
  domain rules), ``glob``.
- ``InputFile``: one raw file to read: ``url, format, domain, size``.
- ``list_inputs(specs, domain_rules) -> list[InputFile]``: sorted, deterministic.
- ``plan_parts(files, files_per_part, bytes_per_part) -> list[list[InputFile]]``: deterministic.
- ``extract_part(files, cfg: ExtractConfig) -> curate.stage.StageResult`` (stage ``extract``):
  documents of ``curate.schema.DOC_SCHEMA``; empty results removed with a reason; unreadable
  input quarantined with a reason; never raises for bad input.
"""
