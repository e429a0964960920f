"""Quality: a fastText classifier Sluice trains itself, curated reference text vs raw text.

Training (:func:`train_quality_model`, CLI ``sluice train-quality`` → :func:`main`): positives
are curated reference texts (Python docs, dictionaries, the Debian reference, ...); negatives
are the run's own extracted documents (``runs/<run>/extract/part-*.parquet``, column ``text``)
or configured files — the GPT-3 / DCLM recipe of "reference-like vs. the crawl", at small scale.
Each document is cut into examples of at most ``chunk_words`` words; repeated examples are kept
once and examples are split train / held-out by a hash of their text (by example, not by
document: a reference source is often one huge file, a dictionary say, that would otherwise land
wholly on one side); the larger class is down-sampled (deterministically) to the smaller. One thread and a fixed
seed make training deterministic. Saved in ``out_dir``: ``quality.bin`` (the model) and
``quality_stats.json`` (sizes, config, held-out precision / recall / F1 of the positive class at
0.5 and at the configured threshold).

In a run (``curate.runner.run_quality_train``): when the stage's ``model_path`` is unset, the
run trains its own model after ``extract``, from its extracted documents (``train``:
:class:`RunTrainingConfig`: positives by source pattern, negatives by domain) into
``<run>/quality/model.bin`` + ``quality_stats.json``, and the stage uses it.

Shipped model (``SHIPPED_MODEL``, ``curate/filters/models/quality-en.ftz``, what
configs/default.yaml uses): trained by ``bench/quality_model.py`` on Debian/Python reference
text vs its own words shuffled, word salad and changelogs, nothing from the user's corpus; data card and held-out
scores in ``curate/filters/models/README.md``. A model with a card next to it (``<model>.json``
with ``languages``) scores only those languages when ``langs`` is empty.

Stage ``quality``: ``quality_score`` = the model's probability of the positive label for the
whole text (lower-cased, punctuation split off, newlines → spaces); documents of
``skip_domains`` (code) and, when ``langs`` is set, of other languages are not scored (null)
and never removed. Reason: ``quality_low`` (score < ``threshold``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate.stage import FILE_OPTION, Rules, Stage
from curate.storage import exists, local_copy

SHIPPED_MODEL = str(Path(__file__).with_name("models") / "quality-en.ftz")
POSITIVE = "__label__hq"
NEGATIVE = "__label__lq"
MODEL_FILE = "quality.bin"
STATS_FILE = "quality_stats.json"
_PUNCT = re.compile(r"([^\w\s])")
_HTML_SUFFIXES = {".html", ".htm", ".xhtml"}


class QualityTrainConfig(BaseModel):
    """How the classifier is trained (fastText supervised, softmax over two labels)."""

    model_config = ConfigDict(extra="forbid")

    chunk_words: int = Field(200, ge=10, description="words per training example at most")
    min_words: int = Field(10, ge=1, description="shorter examples are dropped")
    held_out: float = Field(0.2, gt=0.0, lt=1.0, description="fraction of documents held out")
    balance: bool = Field(True, description="down-sample the larger class to the smaller")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="also reported on held-out")
    seed: int = 0
    epoch: int = 15
    lr: float = 0.5
    dim: int = 32
    word_ngrams: int = 2
    min_count: int = 2
    bucket: int = Field(1 << 17, description="hash buckets for n-grams (model size)")


class RunTrainingConfig(BaseModel):
    """How a run trains its own model (the runner's ``quality.train`` step, when
    ``model_path`` is unset): from the run's extracted documents (``extract`` output).

    Positives: documents whose ``source`` matches one of ``positive_sources`` (fnmatch, ``*``
    crosses ``/``): curated reference text. Negatives: documents of ``negative_domains`` that
    match none of them (a document is never on both sides)."""

    model_config = ConfigDict(extra="forbid")

    positive_sources: list[str] = Field(
        default_factory=list, description="fnmatch patterns over document sources"
    )
    negative_domains: list[str] = Field(default_factory=lambda: ["web"])
    params: QualityTrainConfig = Field(default_factory=QualityTrainConfig)


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


def fasttext_line(text: str) -> str:
    """One fastText input line: lower-cased, punctuation split off, whitespace collapsed."""
    return " ".join(_PUNCT.sub(r" \1 ", text.lower()).split())


# fasttext_line's punctuation class in RE2 (Arrow): Python's Unicode ``\w`` is letters, numbers
# and "_"; its ``\s`` (str.isspace) is RE2's \s plus \v, \x1c-\x1f, \x85 and the Z categories
_PUNCT_RE2 = r"[^\p{L}\p{N}_\s\x0b\x1c-\x1f\x85\p{Z}]"
# the two letters whose str.lower() depends on context or grows (final sigma; İ → i + dot)
_PYTHON_LOWER = "[Σİ]"


def fasttext_lines(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> list[str]:
    """:func:`fasttext_line` of every text, vectorised: lower-casing and the punctuation split
    are vectorised over the whole batch (Arrow, numpy), then whitespace is collapsed. Same
    output for every character of Python's Unicode tables (texts with a letter whose
    lower-casing Arrow does differently take :func:`fasttext_line`)."""
    return [" ".join(line.split()) for line in _spaced_lines(texts)]


def _spaced_lines(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> list[str]:
    """:func:`fasttext_lines` before whitespace is collapsed: the same fastText tokens (what
    :func:`score` predicts on, without the collapse), on one line. ASCII punctuation is split
    off on the UTF-8 bytes with numpy (an ASCII byte is never part of a multi-byte character),
    the rest with one RE2 pass."""
    arr = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts, pa.string())
    arr = pc.fill_null(arr, "")
    lowered = pc.cast(pc.utf8_lower(arr), pa.large_string())
    if isinstance(lowered, pa.ChunkedArray):
        lowered = lowered.combine_chunks()
    spaced = _split_ascii_punct(lowered)
    lines = pc.replace_substring_regex(spaced, _NON_ASCII_RE2, r" \1 ").to_pylist()
    special = pc.match_substring_regex(arr, _PYTHON_LOWER).to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(special):
        lines[i] = fasttext_line(arr[int(i)].as_py())
    return lines


# bytes < 0x80 that fasttext_line splits off: neither \w nor \s in Python (no byte >= 0x80 is)
_ASCII_PUNCT = np.array(
    [c < 128 and not (chr(c).isalnum() or c == 95 or chr(c).isspace()) for c in range(256)]
)
# Python's whitespace that fastText does not split on (it splits on ' ' \t \n \v \f \r \0)
# becomes " ": ASCII on the bytes, the others in the RE2 pass
_ASCII_SPACE = np.array([32 if c == 10 or 0x1C <= c <= 0x1F else c for c in range(256)], np.uint8)
# then one RE2 pass: other punctuation → " p ", Python whitespace fastText does not split on
# → "  " (group 1 empty)
_NON_ASCII_RE2 = (
    r"([^\x00-\x7f\p{L}\p{N}\x{85}\p{Z}])"
    r"|[\x{85}\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)
_CHUNK_BYTES = 16 << 20  # bytes of text per numpy pass (bounds its temporaries)


def _split_ascii_punct(arr: pa.LargeStringArray) -> pa.Array:
    """ " p " for every ASCII punctuation byte ``p`` of every string (no nulls), in chunks."""
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    pieces, start = [], 0
    while start < len(arr):
        stop = int(np.searchsorted(offsets, offsets[start] + _CHUNK_BYTES, side="right")) - 1
        stop = min(max(stop, start + 1), len(arr))
        pieces.append(_split_chunk(arr.slice(start, stop - start)))
        start = stop
    return pa.concat_arrays(pieces) if pieces else arr


def _split_chunk(arr: pa.LargeStringArray) -> pa.Array:
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    first = int(offsets[0])
    data = np.frombuffer(bufs[2], np.uint8)[first : int(offsets[-1])] if bufs[2] else b""
    data = _ASCII_SPACE[np.asarray(data, np.uint8)]  # \n and \x1c-\x1f → " "
    offsets = offsets - first
    where = np.flatnonzero(_ASCII_PUNCT[data])
    out = np.repeat(data, 1 + 2 * _ASCII_PUNCT[data])  # each punctuation byte three times
    middle = where + 2 * np.arange(len(where)) + 1
    out[middle - 1] = 32
    out[middle + 1] = 32  # " p "
    new_offsets = offsets + 2 * np.searchsorted(where, offsets)
    return pa.LargeStringArray.from_buffers(
        len(arr), pa.py_buffer(new_offsets), pa.py_buffer(out), null_count=0
    )


def examples(text: str, chunk_words: int, min_words: int) -> list[str]:
    """``text`` as fastText lines of at most ``chunk_words`` tokens (≥ ``min_words``)."""
    tokens = fasttext_line(text).split()
    out = [" ".join(tokens[i : i + chunk_words]) for i in range(0, len(tokens), chunk_words)]
    return [e for e in out if e.count(" ") + 1 >= min_words]


def _bucket(text: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _split(texts: Sequence[str], cfg: QualityTrainConfig) -> tuple[list[str], list[str]]:
    """(train, held-out) examples, split by a hash of each example; repeated examples are
    kept once, so no example is on both sides."""
    unique = dict.fromkeys(e for t in texts for e in examples(t, cfg.chunk_words, cfg.min_words))
    train: list[str] = []
    test: list[str] = []
    for e in unique:
        (test if _bucket(e, cfg.seed) < cfg.held_out else train).append(e)
    return train, test


def _downsample(items: list[str], n: int, seed: int) -> list[str]:
    if len(items) <= n:
        return items
    return sorted(items, key=lambda e: _bucket(e, seed + 1))[:n]


def _metrics(y_true: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    pred = p >= threshold
    tp = int((pred & y_true).sum())
    fp = int((pred & ~y_true).sum())
    fn = int((~pred & y_true).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    negatives = int((~y_true).sum())
    return {"threshold": threshold, "precision": precision, "recall": recall, "f1": f1,
            "false_positive_rate": fp / negatives if negatives else 0.0,
            "accuracy": float((pred == y_true).mean()) if len(p) else 0.0}  # fmt: skip


def positive_probability(model: Any, lines: list[str]) -> np.ndarray:
    """P(positive label) for each fastText line."""
    if not lines:
        return np.zeros(0, dtype=np.float32)
    labels, probs = model.predict(lines, k=2)
    out = np.zeros(len(lines), dtype=np.float32)
    for i, (labs, ps) in enumerate(zip(labels, probs, strict=True)):
        for lab, p in zip(labs, ps, strict=True):
            if lab == POSITIVE:
                out[i] = min(float(p), 1.0)
    return out


# Trains in a fresh interpreter: with fasttext-numpy2 0.10.4 every second train_supervised call
# in one process fails with "Encountered NaN" on the same data (some state survives a training).
# The child imports only fasttext, so it works whatever sys.path the parent was given.
_FIT = """
import json, os, sys
import fasttext
job = json.loads(sys.argv[1])
model = fasttext.train_supervised(input=job["input"], **job["params"])
model.save_model(job["out"] + ".tmp")
os.replace(job["out"] + ".tmp", job["out"])
"""


def _fit(train_file: str, model_path: str, params: dict[str, Any]) -> None:
    """Train on ``train_file`` in a child interpreter and save the model atomically."""
    job = json.dumps({"input": train_file, "out": model_path, "params": params})
    done = subprocess.run([sys.executable, "-c", _FIT, job], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fastText training failed: {done.stderr.strip()[-2000:]}")


def train_quality_model(
    positive_texts: list[str],
    negative_texts: list[str],
    out_dir: str,
    cfg: QualityTrainConfig,
) -> dict[str, Any]:
    """Train, evaluate on held-out examples, save the model and ``quality_stats.json``."""
    import fasttext

    pos_train, pos_test = _split(positive_texts, cfg)
    neg_train, neg_test = _split(negative_texts, cfg)
    if not pos_train or not neg_train or not pos_test or not neg_test:
        raise ValueError(
            f"too little data: positive {len(pos_train)}/{len(pos_test)}, "
            f"negative {len(neg_train)}/{len(neg_test)} train/held-out examples"
        )
    if cfg.balance:
        n = min(len(pos_train), len(neg_train))
        pos_train = _downsample(pos_train, n, cfg.seed)
        neg_train = _downsample(neg_train, n, cfg.seed)
    lines = [f"{POSITIVE} {e}" for e in pos_train] + [f"{NEGATIVE} {e}" for e in neg_train]
    lines.sort(key=lambda line: _bucket(line, cfg.seed + 2))  # interleave, deterministically
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=out_dir, delete=False) as f:
        f.write("\n".join(lines) + "\n")
        train_file = f.name
    model_path = os.path.join(out_dir, MODEL_FILE)
    params = dict(
        epoch=cfg.epoch, lr=cfg.lr, dim=cfg.dim, wordNgrams=cfg.word_ngrams,
        minCount=cfg.min_count, bucket=cfg.bucket, loss="softmax", thread=1, seed=cfg.seed,
        verbose=0,
    )  # fmt: skip
    try:
        _fit(train_file, model_path, params)
    finally:
        os.unlink(train_file)
    model = fasttext.load_model(model_path)

    y = np.concatenate([np.ones(len(pos_test), bool), np.zeros(len(neg_test), bool)])
    p = positive_probability(model, pos_test + neg_test)
    stats: dict[str, Any] = {
        "model": MODEL_FILE,
        "documents": {"positive": len(positive_texts), "negative": len(negative_texts)},
        "train_examples": {"positive": len(pos_train), "negative": len(neg_train)},
        "held_out_examples": {"positive": len(pos_test), "negative": len(neg_test)},
        "held_out": _metrics(y, p, 0.5),
        "held_out_at_threshold": _metrics(y, p, cfg.threshold),
        "config": cfg.model_dump(),
    }
    with open(os.path.join(out_dir, STATS_FILE), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=2, sort_keys=True)
    return stats


# ---------------------------------------------------------------------------------------------
# reading training text


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


def training_texts(docs: pa.Table, cfg: RunTrainingConfig) -> tuple[list[str], list[str]]:
    """(positive, negative) texts of a run's extracted documents (columns text, source,
    domain), in table order, following ``cfg`` (see :class:`RunTrainingConfig`)."""
    import fnmatch

    positives: list[str] = []
    negatives: list[str] = []
    negative_domains = set(cfg.negative_domains)
    for text, source, domain in zip(
        docs["text"].to_pylist(), docs["source"].to_pylist(), docs["domain"].to_pylist(),
        strict=True,
    ):  # fmt: skip
        if any(fnmatch.fnmatchcase(source, p) for p in cfg.positive_sources):
            positives.append(text)
        elif domain in negative_domains:
            negatives.append(text)
    return positives, negatives


def run_extract_parts(run_dir: str) -> list[str]:
    """The extract stage's output parts of a run: ``<run_dir>/extract/part-*.parquet``."""
    parts = sorted(str(p) for p in Path(run_dir, "extract").glob("part-*.parquet"))
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


# ---------------------------------------------------------------------------------------------
# the stage


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
        raise ValueError("quality: no model_path (the runner sets the run's trained model)")
    n = table.num_rows
    domains = table["domain"].to_pylist() if "domain" in table.column_names else [None] * n
    langs = table["lang"].to_pylist() if "lang" in table.column_names else [None] * n
    skip = set(cfg.skip_domains)
    wanted = set(cfg.langs or model_languages(cfg.model_path))
    todo = [
        i for i, (d, lang) in enumerate(zip(domains, langs, strict=True))
        if d not in skip and (not wanted or lang in wanted)
    ]  # fmt: skip
    lines = _spaced_lines(table["text"].take(pa.array(todo, pa.int64())))
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


QUALITY = Stage(name="quality", config=QualityConfig, score=score, rules=rules)
