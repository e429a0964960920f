"""``sluice train-quality``: train the quality classifier from files or runs, outside a run.

Positives are files or folders of curated reference text; negatives are files (parquet
included) or runs' extracted documents (``<run>/extract/part-*.parquet``, column ``text``).
Training itself is :func:`curate.filters.quality_train.train_quality_model`.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from curate.filters.quality_train import QualityTrainConfig, train_quality_model
from curate.layout import EXTRACT_STAGE, RunLayout

_HTML_SUFFIXES = {".html", ".htm", ".xhtml"}


def _read_file(path: Path) -> list[str]:
    """Texts of one file: parquet → its ``text`` column; HTML → trafilatura; gzip/dictzip →
    decompressed; anything else → UTF-8 text (binary files are skipped)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [t for t in pq.read_table(path, columns=["text"])["text"].to_pylist() if t]
    data = path.read_bytes()
    if path.suffix in {".gz", ".dz"}:
        data = gzip.decompress(data)
    if b"\x00" in data[:8192]:
        return []
    text = data.decode("utf-8", "replace")
    if path.suffix in _HTML_SUFFIXES:
        import trafilatura

        text = trafilatura.extract(text) or ""
    return [text] if text.strip() else []


def read_texts(paths: Iterable[str]) -> list[str]:
    """Texts of files and (recursively) folders, in sorted path order."""
    texts: list[str] = []
    for raw in paths:
        root = Path(raw)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            texts += _read_file(path)
    return texts


def run_extract_parts(run_dir: str) -> list[str]:
    """The extract stage's kept parts of a run: ``<run_dir>/extract/part-NNNNN.parquet``."""
    parts = RunLayout(run_dir).part_files(EXTRACT_STAGE)
    if not parts:
        raise FileNotFoundError(f"no extract/part-*.parquet under {run_dir}")
    return parts


SOURCE_KEYS = ("positive", "negative", "negative_run")


def main(argv: Sequence[str] | None = None) -> int:
    """``sluice train-quality``: train the classifier from configured files or a run.

    ``--config`` YAML: ``positive``, ``negative``, ``negative_run`` (lists of paths, added to the
    command-line ones) and any :class:`QualityTrainConfig` field.
    """
    parser = argparse.ArgumentParser(prog="sluice train-quality", description=main.__doc__)
    parser.add_argument("--positive", action="append", default=[],
                        help="file or folder of curated reference text (repeatable)")  # fmt: skip
    parser.add_argument("--negative", action="append", default=[],
                        help="file or folder of negative text, parquet included (repeatable)")  # fmt: skip
    parser.add_argument("--negative-run", action="append", default=[],
                        help="run folder whose extract/part-*.parquet are negatives")  # fmt: skip
    parser.add_argument("--out", required=True, help="folder for quality.bin and stats")
    parser.add_argument("--config", help="YAML: sources and QualityTrainConfig fields")
    args = parser.parse_args(argv)
    fields: dict[str, Any] = {}
    if args.config:
        import yaml

        from curate.config import found_next_to_config

        fields = yaml.safe_load(Path(args.config).read_text()) or {}
        for key in SOURCE_KEYS:  # relative paths not in the working directory: next to the config
            fields[key] = [
                str(root / p) if (root := found_next_to_config(p, Path(args.config).parent)) else p
                for p in fields.get(key) or []
            ]
    sources = {key: list(fields.pop(key, None) or []) for key in SOURCE_KEYS}
    cfg = QualityTrainConfig(**fields)
    positives = sources["positive"] + args.positive
    negatives = sources["negative"] + args.negative
    for run in sources["negative_run"] + args.negative_run:
        negatives += run_extract_parts(run)
    if not positives:
        parser.error("give --positive (or positive: in --config)")
    if not negatives:
        parser.error("give --negative or --negative-run (or negative/negative_run: in --config)")
    stats = train_quality_model(read_texts(positives), read_texts(negatives), args.out, cfg)
    print(json.dumps({k: stats[k] for k in ("train_examples", "held_out")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
