"""Stage ``quality``: a fastText classifier of reference-like text, trained by Sluice itself.

``quality_score`` = the model's probability of the positive label for the whole text
(lower-cased, punctuation split off, newlines → spaces: :func:`fasttext_line`); documents of
``skip_domains`` (code) and, when ``langs`` is set, of other languages are not scored (null) and
never removed. Reason: ``quality_low`` (score < ``threshold``).

The model: ``model_path`` (from ``sluice train-quality``, ``curate.filters.quality_cli``), or,
when unset, the run's own, which the stage declares as its fit step (:data:`RUN_MODEL`): trained
after ``extract`` on the run's extracted documents (``train``: :class:`RunTrainingConfig`:
positives by source pattern, negatives by domain) into ``<run>/quality/model.bin`` +
``quality_stats.json`` (``curate.filters.quality_train``).

Shipped model (``SHIPPED_MODEL``, ``curate/filters/models/quality-en.ftz``, what
configs/default.yaml uses): trained by ``bench/quality_model.py`` on Debian/Python reference
text vs its own words shuffled, word salad and changelogs, nothing from the user's corpus; data
card and held-out scores in ``curate/filters/models/README.md``. A model with a card next to it
(``<model>.json`` with ``languages``) scores only those languages when ``langs`` is empty.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate.filters.quality_text import (
    _spaced_lines,
    fasttext_input,
    fasttext_line,
    fasttext_lines,
)
from curate.filters.quality_train import (
    MODEL_FILE,
    STATS_FILE,
    QualityTrainConfig,
    RunTrainingConfig,
    positive_probability,
    train_quality_model,
    training_texts,
)
from curate.stage import FILE_OPTION, Fit, FitResult, Rules, Stage
from curate.storage import exists, local_copy, read_columns

__all__ = [
    "QUALITY",
    "QualityConfig",
    "QualityTrainConfig",
    "RunTrainingConfig",
    "SHIPPED_MODEL",
    "_spaced_lines",
    "fasttext_input",
    "fasttext_line",
    "fasttext_lines",
]
RUN_MODEL_FILE = "model.bin"  # the run's own model: <run>/quality/model.bin
SHIPPED_MODEL = str(Path(__file__).with_name("models") / "quality-en.ftz")


class QualityConfig(BaseModel):
    """The model (a file, or the one the run trains) and the score below which a document goes."""

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = Field(
        None,
        description="quality.bin from train-quality (a path or fsspec URL); None: the run "
        "trains its own (train)",
        json_schema_extra=FILE_OPTION,
    )
    train: RunTrainingConfig = Field(default_factory=RunTrainingConfig)
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    skip_domains: list[str] = Field(default_factory=lambda: ["code"])
    langs: list[str] = Field(
        default_factory=list,
        description="score only documents of these languages (empty: all); the others stay",
    )


def load_model(path: str) -> Any:
    """The model at ``path`` (a local path or any fsspec URL, copied once per machine), loaded
    once per process and again when the file changes."""
    if not exists(path):
        raise FileNotFoundError(f"quality model {path} not found: run `sluice train-quality`")
    local = local_copy(path)
    return _load(local, os.stat(local).st_mtime_ns)


@cache
def _load(path: str, mtime_ns: int) -> Any:
    import fasttext

    return fasttext.load_model(path)


def model_languages(path: str) -> list[str]:
    """The languages a model was trained on, from its card ``<model>.json`` (empty: unknown)."""
    card = Path(path).with_suffix(".json")
    if "://" in path or not card.exists():
        return []
    return list(json.loads(card.read_text(encoding="utf-8")).get("languages") or [])


def score(table: pa.Table, cfg: QualityConfig) -> pa.Table:
    """Add ``quality_score`` (P(reference-like)), null for skipped domains and for languages
    other than ``langs`` (empty: the model card's languages, else all)."""
    if cfg.model_path is None:
        raise ValueError("quality: no model_path (a run fills in the model it trained)")
    n = table.num_rows
    domains = table["domain"].to_pylist() if "domain" in table.column_names else [None] * n
    langs = table["lang"].to_pylist() if "lang" in table.column_names else [None] * n
    skip = set(cfg.skip_domains)
    wanted = set(cfg.langs or model_languages(cfg.model_path))
    todo = [
        i for i, (d, lang) in enumerate(zip(domains, langs, strict=True))
        if d not in skip and (not wanted or lang in wanted)
    ]  # fmt: skip
    lines = fasttext_input(table["text"].take(pa.array(todo, pa.int64())))
    probs = positive_probability(load_model(cfg.model_path), lines)
    values: list[float | None] = [None] * n
    for j, i in enumerate(todo):
        values[i] = float(probs[j])
    return table.append_column(
        pa.field("quality_score", pa.float32()), pa.array(values, pa.float32())
    )


def rules(table: pa.Table, cfg: QualityConfig) -> Rules:
    """``quality_low``: score below the threshold (unscored documents stay)."""
    scores = pc.fill_null(table["quality_score"], 1.0).to_numpy(zero_copy_only=False)
    return {"quality_low": scores < cfg.threshold}


# --- the run's own model: the stage's fit step --------------------------------------------------


def _fit_run_model(parts: list[str], cfg: QualityConfig) -> FitResult:
    """Train the model on a run's extracted documents (positives by source pattern, negatives
    by domain). Deterministic (one thread, fixed seed, in a child interpreter)."""
    docs = pa.concat_tables(read_columns(u, ["text", "source", "domain"]) for u in parts)
    positives, negatives = training_texts(docs, cfg.train)
    with tempfile.TemporaryDirectory(prefix="sluice-quality-") as tmp:
        result = train_quality_model(positives, negatives, tmp, cfg.train.params)
        files = {
            RUN_MODEL_FILE: Path(tmp, MODEL_FILE).read_bytes(),
            STATS_FILE: Path(tmp, STATS_FILE).read_bytes(),
        }
    keys = ("documents", "train_examples", "held_out_examples", "held_out")
    return FitResult(files, {"trained": True, **{k: result[k] for k in keys}}, RUN_MODEL_FILE)


def _check_sources(cfg: QualityConfig, files: list[Any]) -> str | None:
    """The training patterns must match some of the run's input files (before anything runs)."""
    names = [f.name for f in files]
    patterns = cfg.train.positive_sources
    matched = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    if not matched:
        return (
            f"train.positive_sources: the patterns {patterns} match none of the {len(names)} "
            f"input files (e.g. {names[:2]}); set model_path or other patterns"
        )
    domains = {f.domain for f in files if f.name not in matched}
    if not domains & set(cfg.train.negative_domains):
        return (
            f"train.negative_domains: {cfg.train.negative_domains} match no input file outside "
            f"positive_sources ({len(matched)} matched; the others' domains: {sorted(domains)})"
        )
    return None


RUN_MODEL: Fit[QualityConfig] = Fit(
    name="train",
    needed=lambda cfg: cfg.model_path is None,
    options=lambda cfg: cfg.train,
    fit=_fit_run_model,
    use=lambda cfg, url: cfg.model_copy(update={"model_path": url(RUN_MODEL_FILE)}),
    check=_check_sources,
    modules=("curate.filters.quality_train", "curate.filters.quality_text"),
)

QUALITY = Stage(
    name="quality",
    config=QualityConfig,
    score=score,
    rules=rules,
    fit=RUN_MODEL,
    modules=("curate.filters.quality_text",),  # the text normalisation it scores on
)
