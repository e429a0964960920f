"""Train the quality model shipped with Sluice (``curate/filters/models/quality-en.ftz``).

The quality stage's default needs nothing from the user's corpus: this fastText classifier,
trained on text the project fetches offline with apt (``bench/corpus.py``'s ``fetch_package``),
English only (the stage scores only ``langs: [en]`` with it; other languages get a null score and
are never removed by it). Reproducible: fixed packages (Debian 12), one thread, fixed seed.

- positives (curated reference prose): the Debian Reference (``debian-reference-en``), the
  Debian Policy Manual (``debian-policy``), the Python 3.11 tutorial, HOWTOs, FAQ and language
  reference (``python3.11-doc``) — HTML chapters, main text by the project's HTML reader;
  plus the reST sources of other Python chapters and the Jargon File (``dict-jargon``);
- negatives (incoherent or non-prose text): the positives' own words shuffled in windows of
  200 (so the model learns order, not topic), random words of a word list (``wamerican``, 150
  per document, seed 0: keyword-stuffed junk) and Debian changelogs (``changelog.Debian.gz``
  of ``CHANGELOG_PACKAGES``: terse release logs).

None of the evaluation corpus (``bench/evalcorpus.py``: debian-faq, maint-guide,
developers-reference translations, debian-handbook) is used. Training: the project's own
:func:`curate.filters.quality.train_quality_model` (examples of ≤ 200 words, split train /
held-out by hash, classes balanced), then ``fasttext quantize`` (``.ftz``). Writes the model,
``quality-en.json`` (sizes, held-out scores of the quantized model) and prints them; the data
card is ``curate/filters/models/README.md``.

    PYTHONPATH=. python -m bench.quality_model
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.corpus import fetch_package
from curate.filters import quality
from curate.readers.html import extract_html

MODELS = Path(__file__).resolve().parents[1] / "curate" / "filters" / "models"
POSITIVE_PAGES = {
    "debian-reference-en": ["usr/share/debian-reference/*.en.html"],
    "debian-policy": ["usr/share/doc/debian-policy/policy.html/*.html"],
    "python3.11-doc": [
        f"usr/share/doc/python3.11/html/{d}/*.html"
        for d in ("tutorial", "howto", "faq", "reference", "using")
    ],
}
# reST sources (markup and all: documentation corpora hold them) of other Python chapters
POSITIVE_SOURCES = {
    "python3.11-doc": [
        f"usr/share/doc/python3.11/html/_sources/{d}/*.rst.txt"
        for d in ("library", "extending", "distributing", "install")
    ],
}
JARGON = "usr/share/dictd/jargon.dict.dz"  # the Jargon File: dictionary prose, 40 entries a doc
CHANGELOG_PACKAGES = (
    "wamerican", "python3.11-doc", "llvm-16-doc", "texlive-fonts-recommended-doc", "dict-jargon",
    "fortunes", "fortunes-it-off",
)  # fmt: skip
PARAMS = {"dim": 16, "bucket": 1 << 16, "epoch": 10, "chunk_words": 50}  # short pages too

_QUANTIZE = """
import sys, fasttext
model = fasttext.load_model(sys.argv[1])
model.quantize(input=None, qnorm=True, retrain=False, dsub=2)
model.save_model(sys.argv[2])
"""


def positives(cache: Path) -> tuple[list[str], dict[str, int]]:
    texts: list[str] = []
    counts: dict[str, int] = {}
    for package, patterns in POSITIVE_PAGES.items():
        root = fetch_package(package, cache)
        pages = sorted(p for pattern in patterns for p in root.glob(pattern))
        got = [t for p in pages if (t := extract_html(p.read_text("utf-8", "replace"))).strip()]
        counts[f"{package} (HTML)"] = len(got)
        texts += got
    for package, patterns in POSITIVE_SOURCES.items():
        root = fetch_package(package, cache)
        pages = sorted(p for pattern in patterns for p in root.glob(pattern))
        got = [t for p in pages if (t := p.read_text("utf-8", "replace")).strip()]
        counts[f"{package} (reST sources)"] = len(got)
        texts += got
    jargon = gzip.decompress((fetch_package("dict-jargon", cache) / JARGON).read_bytes())
    entries = [e for e in jargon.decode("utf-8", "replace").split("\n\n") if e.strip()]
    docs = ["\n\n".join(entries[i : i + 40]) for i in range(0, len(entries), 40)]
    counts["dict-jargon (40 entries per document)"] = len(docs)
    texts += docs
    return texts, counts


def shuffled(texts: list[str], seed: int = 0, window: int = 200) -> list[str]:
    """The same words in random order within windows of ``window`` words: incoherent text
    with the vocabulary of the positives, so the model learns order, not topic."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        words = text.split()
        for i in range(0, len(words), window):
            chunk = words[i : i + window]
            rng.shuffle(chunk)
            out.append(" ".join(chunk))
    return out


def negatives(cache: Path, positive_texts: list[str]) -> tuple[list[str], dict[str, int]]:
    texts: list[str] = []
    counts: dict[str, int] = {}
    changelogs = []
    for package in CHANGELOG_PACKAGES:
        root = fetch_package(package, cache)
        for path in sorted(root.glob("usr/share/doc/*/changelog.Debian.gz")):
            changelogs.append(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))
    texts += changelogs
    counts[f"changelog.Debian.gz of {', '.join(CHANGELOG_PACKAGES)}"] = len(changelogs)
    words = (fetch_package("wamerican", cache) / "usr/share/dict/american-english").read_text(
        "utf-8", "replace"
    )
    vocab = words.split()
    rng = random.Random(0)
    junk = [" ".join(rng.choice(vocab) for _ in range(150)) for _ in range(500)]
    texts += junk
    counts["wamerican (150 random words per document)"] = len(junk)
    salad = shuffled(positive_texts)
    texts += salad
    counts["positives' words shuffled (200-word windows)"] = len(salad)
    return texts, counts


def held_out_scores(model_path: Path, pos: list[str], neg: list[str], cfg) -> dict:
    """Held-out metrics of the (quantized) model on the examples training never saw."""
    import fasttext

    _, pos_test = quality._split(pos, cfg)
    _, neg_test = quality._split(neg, cfg)
    model = fasttext.load_model(str(model_path))
    y = np.concatenate([np.ones(len(pos_test), bool), np.zeros(len(neg_test), bool)])
    p = quality.positive_probability(model, pos_test + neg_test)
    return {"examples": {"positive": len(pos_test), "negative": len(neg_test)},
            **quality._metrics(y, p, 0.5)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/sluice/debs")
    parser.add_argument("--out", type=Path, default=MODELS)
    args = parser.parse_args(argv)
    pos, pos_counts = positives(args.cache)
    neg, neg_counts = negatives(args.cache, pos)
    cfg = quality.QualityTrainConfig(**PARAMS)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stats = quality.train_quality_model(pos, neg, tmp, cfg)
        ftz = args.out / "quality-en.ftz"
        subprocess.run(
            [sys.executable, "-c", _QUANTIZE, os.path.join(tmp, quality.MODEL_FILE), str(ftz)],
            check=True,
        )
    card = {
        "command": "PYTHONPATH=. python -m bench.quality_model",
        "languages": ["en"],
        "documents": {"positive": pos_counts, "negative": neg_counts},
        "train_examples": stats["train_examples"],
        "held_out_full_model": stats["held_out"],
        "held_out_quantized": held_out_scores(ftz, pos, neg, cfg),
        "size_bytes": ftz.stat().st_size,
        "config": stats["config"],
    }
    (args.out / "quality-en.json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: card[k] for k in ("documents", "held_out_quantized", "size_bytes")},
                     indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
