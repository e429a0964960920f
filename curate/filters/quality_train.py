"""Training the quality classifier (fastText, curated reference text vs raw text).

:func:`train_quality_model`: positives are curated reference texts (Python docs, dictionaries,
the Debian reference, ...); negatives are raw text (the run's own extracted documents, or
files) — the GPT-3 / DCLM recipe of "reference-like vs. the crawl", at small scale. Each
document is cut into examples of at most ``chunk_words`` words; repeated examples are kept once
and examples are split train / held-out by a hash of their text (by example, not by document: a
reference source is often one huge file, a dictionary say, that would otherwise land wholly on
one side); the larger class is down-sampled (deterministically) to the smaller. One thread and a
fixed seed make training deterministic. Saved in ``out_dir``: ``quality.bin`` (the model) and
``quality_stats.json`` (sizes, config, held-out precision / recall / F1 of the positive class at
0.5 and at the configured threshold).

:func:`training_texts` picks a run's positives and negatives from its extracted documents
(:class:`RunTrainingConfig`); the stage (``curate.filters.quality``) declares that as its fit
step. The CLI and the file reader are ``curate.filters.quality_cli``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curate.filters.quality_text import fasttext_line, predict_input

POSITIVE = "__label__hq"
NEGATIVE = "__label__lq"
MODEL_FILE = "quality.bin"
STATS_FILE = "quality_stats.json"


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


def positive_probability(model: Any, lines: list[str] | list[bytes]) -> np.ndarray:
    """P(positive label) for each fastText line (text, or :func:`fasttext_input`'s bytes)."""
    if not lines:
        return np.zeros(0, dtype=np.float32)
    if isinstance(lines[0], bytes):
        labels, probs = predict_input(model, lines)
    else:
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
