"""Heuristic quality rules: Gopher quality, Gopher repetition, C4 lines, FineWeb — one stage.

One stage, ``heuristics``, because all four families read the same split of the same text: each
document is lower-cased and split into words once (:func:`curate.text.rule_tokens`; the stage
splits ``BATCH_WORDS_DOCS`` documents at a time with Arrow, :func:`curate.text.batch_rule_tokens`,
and measures the word-based rules over them: :func:`batch_words`) and into lines/paragraphs
once, and every rule reads those. Each family has its own config section (and can
be switched off); each rule is its own score column and its own removal reason; a threshold set to
``None`` switches that rule off. Defaults are the papers' thresholds, as in datatrove 0.10.1's
``GopherQualityFilter``, ``GopherRepetitionFilter``, ``C4QualityFilter`` and
``FineWebQualityFilter``.

Measured on the text as it comes in; the C4 line rewrite (drop lines without terminal
punctuation, with fewer than 3 words, mentioning javascript or cookie/terms policies; strip
``[1]``-style citations) then replaces ``text`` in the output — of removed documents too — when
``c4.rewrite`` is on. C4's document rules (lorem ipsum, curly bracket, fewer than 5 sentences)
are measured on the lines C4 keeps, as in the reference implementation. A document whose
measurement raises goes to quarantine (``heuristics_error:<Exception>``), not the whole part.

Columns (float32 unless noted; null for skipped domains): ``gopher_words`` (int32),
``gopher_mean_word_length``, ``gopher_symbol_ratio`` (max of '#' and ellipses per word),
``gopher_bullet_lines``, ``gopher_ellipsis_lines``, ``gopher_alpha_words``,
``gopher_stop_words`` (int32, distinct stop words; null when the language has no list),
``gopher_dup_{para,line}_frac``, ``gopher_dup_{para,line}_char_frac``, ``gopher_top_{n}gram``,
``gopher_dup_{n}gram``, ``fineweb_line_punct``, ``fineweb_short_lines``, ``fineweb_dup_chars``,
``fineweb_list_ratio``, ``c4_lines_removed`` (int32), ``c4_sentences`` (int32),
``c4_lorem_ipsum`` / ``c4_curly_bracket`` (bool). Reasons: the column name of the rule
(``gopher_word_count`` for too few or too many words, ``c4_too_few_sentences``), in the order
Gopher quality → Gopher repetition → C4 → FineWeb.

Differences from datatrove, on purpose:
- words: whitespace tokens with punctuation stripped (not spaCy); the word-count, mean-length,
  symbol-ratio and stop-word rules count these, the alpha-words rule counts whitespace tokens
  with a letter (datatrove counts spaCy tokens, punctuation marks included, so ordinary prose
  falls under its 80%: the main source of disagreement in bench/RESULTS.md);
- lines: blank lines are not lines (bullet/ellipsis fractions, duplicate lines);
- top n-gram: only an n-gram that occurs at least twice counts (a text of unique n-grams has no
  "top duplicate"); duplicate n-gram characters are the words covered by any later occurrence of
  an n-gram (a union, so overlaps count once), computed with rolling hashes in numpy;
- C4 sentences: counted with a regex (terminal punctuation followed by a space or the end;
  ``。！？`` anywhere, ``؟ । ॥`` too), not with NLTK punkt; C4's line rule also ends a line at
  ``。！？؟।`` and counts an unspaced-script character as one word (:mod:`curate.text`);
- language (FineWeb-2 style): words are split per script (each CJK/Thai character a word, dot
  leaders no token: :mod:`curate.text`); the Gopher stop-word rule uses the document's ``lang``
  (a list per language in ``stop_words``; languages without one: null, not removed; null
  ``lang`` counts as ``lang_if_null``); the mean-word-length rule cannot judge languages written
  without spaces (``unspaced_langs``: ja, zh, th, ...): null, not removed. Every family's
  thresholds can be set per language (``by_lang``: lang -> field -> value); Gopher quality ships
  ``lang_thresholds.json``, computed by ``bench/lang_thresholds.py`` from parallel reference
  text (the word-count limits scaled by each language's words per English word, ...);
- C4's curly-bracket rule flags only when ``curly_bracket_min_lines`` of the kept lines hold a
  ``{`` (default 0: any line, as C4; configs/default.yaml asks for more, so one ``{`` in a
  manual is not code);
- a page that is a later section of a multi-page document (an HTML book chapter or section:
  ``meta`` ``section_of``, from the page's ``<link rel>`` navigation, see
  :mod:`curate.readers.html`) is not judged by the length minima (Gopher's ``min_words``, C4's
  ``min_sentences``): they remove stubs, and a section's length is not its document's (a
  three-sentence section of a 400-page handbook is no stub). Its maxima and all other rules
  apply as to any document; ``section_length: true`` judges sections' length too (on a web
  crawl, blog themes that link each post to the previous one and the blog's start count as
  sections as well);
- code and command listings are not prose: the lines an HTML page's ``<pre>`` blocks gave
  (``meta`` ``code_lines``, see :mod:`curate.readers.html`) are left out before anything is
  measured (``exclude_listings``), so a shell session or a configuration file quoted in a manual
  does not count as short lines without punctuation, ``#`` symbols, repeated n-grams or
  ``{`` lines; the C4 rewrite keeps prose lines only;
- domains in ``skip_domains`` (code, by default) are not measured: null scores, never removed;
  a family with ``domains`` set measures only documents of those domains (null scores, so no
  removal by its rules, elsewhere). C4's line rule and FineWeb's line rules assume one
  paragraph per line (extracted web text); hard-wrapped text (PDF, dictionaries, rst, fortunes)
  ends most lines mid-sentence, so there they would drop most lines (measured on data/sample:
  the rewrite kept 13% of the PDF characters, 16% of rst, 19% of the dictionary, 63% of web) —
  configs/default.yaml restricts them to ``web``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate.schema import CODE_LINES, SECTION_OF
from curate.stage import ERROR_COLUMN, Rules, Stage
from curate.text import (
    _UNSPACED_RE2,
    NON_LATIN_TERMINAL,
    UNSPACED_CHAR,
    batch_rule_tokens,
    count_sentences,
    line_words,
    replace_rows,
)

# Gopher (Rae et al. 2021, A.1.1): "the, be, to, of, and, that, have, with" — at least two present.
# The other lists hold the same kind of words (article/copula/common prepositions, conjunctions,
# particles), eight per language; ja/zh/th entries are single characters (each one a word of the
# split, see curate.text).
STOP_WORDS: dict[str, list[str]] = {
    "en": ["the", "be", "to", "of", "and", "that", "have", "with"],
    "de": ["der", "die", "das", "und", "ist", "zu", "von", "mit"],
    "fr": ["le", "la", "les", "de", "et", "est", "que", "avec"],
    "es": ["el", "la", "de", "que", "y", "en", "es", "con"],
    "it": ["il", "la", "di", "che", "e", "è", "per", "con"],
    "pt": ["o", "a", "de", "que", "e", "é", "para", "com"],
    "nl": ["de", "het", "een", "en", "van", "is", "dat", "met"],
    "id": ["yang", "dan", "di", "ini", "itu", "dengan", "untuk", "dari"],
    "ca": ["el", "la", "de", "i", "que", "amb", "per", "és"],
    "ro": ["și", "de", "în", "a", "la", "cu", "că", "pe"],
    "sv": ["och", "i", "att", "det", "som", "en", "på", "är"],
    "da": ["og", "i", "at", "det", "en", "til", "er", "som"],
    "no": ["og", "i", "det", "på", "som", "er", "en", "til"],
    "pl": ["i", "w", "na", "nie", "się", "z", "do", "że"],
    "cs": ["a", "v", "se", "na", "je", "že", "s", "to"],
    "hr": ["i", "je", "u", "na", "da", "se", "za", "od"],
    "tr": ["ve", "bir", "bu", "da", "de", "için", "ile", "olarak"],
    "vi": ["và", "của", "là", "có", "các", "được", "cho", "trong"],
    "ru": ["и", "в", "не", "на", "что", "с", "по", "это"],
    "uk": ["і", "в", "на", "що", "з", "не", "до", "та"],
    "el": ["και", "το", "να", "του", "η", "της", "με", "για"],
    "ar": ["في", "من", "على", "أن", "إلى", "التي", "هذا", "عن"],
    "fa": ["و", "در", "به", "از", "که", "این", "را", "با"],
    "hi": ["के", "है", "में", "की", "और", "को", "से", "का"],
    "ja": ["の", "に", "は", "を", "た", "が", "で", "て"],
    "zh": ["的", "是", "在", "了", "和", "有", "不", "这"],
}
UNSPACED_LANGS = ["ja", "zh", "th", "lo", "km", "my", "bo"]
BULLETS = ("-", "•", "‣", "◦", "●", "▪", "*")
ELLIPSES = ("...", "…")
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
C4_POLICY = (
    "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
    "use cookies",
)  # fmt: skip
# every C4_POLICY phrase holds one of these: a line without any is no policy line (one check)
_POLICY_HINTS = ("cookie", "terms of use", "privacy policy")
assert all(any(h in p for h in _POLICY_HINTS) for p in C4_POLICY)
# a line ending in one of these holds a sentence end (count_sentences(line) >= 1)
_SENTENCE_CLOSED = (".", "!", "?", "؟", "।", "॥", "。", "！", "？")
C4_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
FINEWEB_TERMINAL = (".", "!", "?", "…", '"', "'", "”", "»", "。", "！", "？", "؟", "।", "॥")
_PARAGRAPHS = re.compile(r"\n\s*\n")
LANG_THRESHOLDS = Path(__file__).with_name("lang_thresholds.json")


@cache
def _lang_thresholds() -> dict[str, Any]:
    if not LANG_THRESHOLDS.exists():
        return {}
    return json.loads(LANG_THRESHOLDS.read_text(encoding="utf-8")).get("families", {})


def lang_thresholds(family: str) -> dict[str, dict[str, float | None]]:
    """The shipped per-language thresholds of ``family`` (``lang_thresholds.json``, written by
    ``bench/lang_thresholds.py`` from corpus statistics; a copy, safe to change)."""
    return {lang: dict(v) for lang, v in _lang_thresholds().get(family, {}).items()}


# the distinct languages of a batch and, for each row, the index of its language among them
Langs = tuple[list[str | None], np.ndarray]


def batch_langs(table: pa.Table) -> Langs:
    """The distinct values of ``lang`` and each row's index into them (one pass over the
    column, so a per-language threshold costs one lookup per language, not per row)."""
    if "lang" not in table.column_names or table.num_rows == 0:
        return [None], np.zeros(table.num_rows, dtype=np.intp)
    encoded = pc.dictionary_encode(table["lang"]).combine_chunks()
    names = encoded.dictionary.to_pylist() + [None]
    index = pc.fill_null(encoded.indices, len(names) - 1).to_numpy(zero_copy_only=False)
    return names, index.astype(np.intp)


class RuleFamilyConfig(BaseModel):
    """What every rule family has: a switch and the domains it applies to."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    domains: list[str] | None = Field(None, description="only these domains (None: all)")
    by_lang: dict[str, dict[str, float | None]] = Field(
        default_factory=dict,
        description="thresholds of this family per language (lang -> field -> value)",
    )

    def limits(self, field: str, langs: Langs, base: Any = ...) -> np.ndarray:
        """``field``'s threshold for each document's language (NaN: rule off); ``base``: the
        value where ``by_lang`` has none (default: the field's)."""
        base = getattr(self, field) if base is ... else base
        names, index = langs

        def value(lang: str | None) -> float:
            v = self.by_lang.get(lang or "", {}).get(field, base) if self.by_lang else base
            return np.nan if v is None else float(v)

        return np.asarray([value(lang) for lang in names], dtype=float)[index]


class GopherQualityConfig(RuleFamilyConfig):
    """Gopher quality rules (Rae et al. 2021, A.1.1); ``None`` switches a rule off."""

    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3
    max_mean_word_length: float | None = 10
    max_symbol_ratio: float | None = Field(0.1, description="'#' or ellipses per word")
    max_bullet_lines: float | None = Field(0.9, description="fraction of lines starting a bullet")
    max_ellipsis_lines: float | None = Field(0.3, description="fraction of lines ending in ...")
    min_alpha_words: float | None = Field(0.8, description="fraction of tokens with a letter")
    min_stop_words: int | None = Field(2, description="distinct stop words of the doc's lang")
    stop_words: dict[str, list[str]] = Field(default_factory=lambda: dict(STOP_WORDS))
    lang_if_null: str | None = "en"
    unspaced_langs: list[str] = Field(default_factory=lambda: list(UNSPACED_LANGS))
    by_lang: dict[str, dict[str, float | None]] = Field(
        default_factory=lambda: lang_thresholds("gopher_quality"),
        description="per language: from corpus statistics (bench/lang_thresholds.py)",
    )


class GopherRepetitionConfig(RuleFamilyConfig):
    """Gopher repetition rules (Rae et al. 2021, table A1): maxima of duplicate fractions
    (``by_lang`` keys of the n-gram rules: ``top_ngrams.2``, ``dup_ngrams.5``, ...)."""

    max_dup_line_frac: float | None = 0.3
    max_dup_para_frac: float | None = 0.3
    max_dup_line_char_frac: float | None = 0.2
    max_dup_para_char_frac: float | None = 0.2
    top_ngrams: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_ngrams: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    by_lang: dict[str, dict[str, float | None]] = Field(
        default_factory=lambda: lang_thresholds("gopher_repetition"),
        description="per language: from corpus statistics (bench/lang_thresholds.py)",
    )


class C4Config(RuleFamilyConfig):
    """C4 (Raffel et al. 2020) line filter and document rules."""

    rewrite: bool = Field(True, description="replace text by the lines C4 keeps")
    remove_citations: bool = True
    terminal_punct: bool = Field(True, description="drop lines not ending in . ? ! \" '")
    min_words_per_line: int | None = 3
    max_word_length: int | None = 1000
    min_sentences: int | None = 5
    lorem_ipsum: bool = True
    javascript: bool = True
    curly_bracket: bool = True
    curly_bracket_min_lines: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="flag only when at least this fraction of kept lines holds '{' (0: any, C4)",
    )
    policy: bool = True


class FineWebConfig(RuleFamilyConfig):
    """FineWeb's three rules (Penedo et al. 2024), plus datatrove's optional list ratio."""

    min_line_punct: float | None = Field(0.12, description="fraction of lines ending in . ! ?")
    max_short_lines: float | None = Field(0.67, description="fraction of lines ≤ short_line_len")
    short_line_length: int = 30
    max_dup_chars: float | None = Field(0.01, description="chars in duplicate lines / chars")
    max_list_ratio: float | None = Field(None, description="newlines per word (datatrove: 0.3)")


class HeuristicsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gopher_quality: GopherQualityConfig = Field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = Field(default_factory=GopherRepetitionConfig)
    c4: C4Config = Field(default_factory=C4Config)
    fineweb: FineWebConfig = Field(default_factory=FineWebConfig)
    skip_domains: list[str] = Field(default_factory=lambda: ["code"])
    exclude_listings: bool = Field(
        True,
        description="measure the prose only: leave out the lines of code/command listings "
        "(meta code_lines, an HTML page's <pre> blocks)",
    )
    section_length: bool = Field(
        False,
        description="apply the length minima (Gopher min_words, C4 min_sentences) to a page "
        "that is a later section of a multi-page document (meta section_of) too",
    )


# ---------------------------------------------------------------------------------------------
# measurements (one document)


def _fraction(count: float, total: float) -> float:
    return count / total if total else 0.0


@dataclass(frozen=True)
class DocWords:
    """What the word-based rules read of one document's split (:func:`curate.text.rule_tokens`),
    measured for the whole batch at once by :func:`batch_words`."""

    tokens: int  # whitespace tokens
    non_alpha_tokens: int  # tokens with no letter
    stop_words: int | None  # distinct stop words of the document's language (None: no list)
    spaced_words: int  # words that are not one unspaced-script character
    spaced_chars: int  # their characters
    ids: np.ndarray  # uint64: each word's index among the document's distinct words, from 1
    lengths: np.ndarray  # int64: each word's characters

    @property
    def words(self) -> int:
        return len(self.ids)


def batch_words(texts: pa.Array, langs: list[str | None], cfg: GopherQualityConfig
                ) -> list[DocWords]:  # fmt: skip
    """:class:`DocWords` of every text (``langs``: each text's language, for its stop words),
    with Arrow and numpy over the batch's words (no Python loop per word)."""
    split = batch_rule_tokens(texts)
    words, offsets = split.words, split.word_offsets
    n = len(offsets) - 1
    lengths = pc.utf8_length(words).to_numpy().astype(np.int64)
    encoded = pc.dictionary_encode(words)
    vocab, gid = encoded.dictionary, encoded.indices.to_numpy().astype(np.int64)
    word_doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    # each word's index among its document's distinct words in order of first occurrence: the
    # (document, word) pairs numbered in order of first occurrence, less the document's first
    pairs = pc.dictionary_encode(pa.array(word_doc * len(vocab) + gid)).indices.to_numpy()
    pairs = pairs.astype(np.int64)
    ids = (pairs - pairs[offsets[:-1]][word_doc] + 1).astype(np.uint64)
    # unspaced-script characters (each one word) have no length that says anything
    unspaced_word = np.zeros(len(words), dtype=bool)
    if split.unspaced.any():
        spans = [np.arange(offsets[i], offsets[i + 1]) for i in np.flatnonzero(split.unspaced)]
        at = np.concatenate(spans)
        found = pc.match_substring_regex(words.take(at), "^" + _UNSPACED_RE2)
        unspaced_word[at] = found.to_numpy(zero_copy_only=False)
    spaced_total = np.concatenate(([0], np.cumsum(np.where(unspaced_word, 0, lengths))))
    unspaced_total = np.concatenate(([0], np.cumsum(unspaced_word, dtype=np.int64)))
    spaced_chars = spaced_total[offsets[1:]] - spaced_total[offsets[:-1]]
    spaced_words = np.diff(offsets) - (unspaced_total[offsets[1:]] - unspaced_total[offsets[:-1]])
    stop = _stop_word_counts(langs, cfg, vocab, gid, word_doc)
    return [
        DocWords(
            tokens=int(split.tokens[i]),
            non_alpha_tokens=int(split.non_alpha_tokens[i]),
            stop_words=stop[i],
            spaced_words=int(spaced_words[i]),
            spaced_chars=int(spaced_chars[i]),
            ids=ids[offsets[i] : offsets[i + 1]],
            lengths=lengths[offsets[i] : offsets[i + 1]],
        )
        for i in range(n)
    ]


def _stop_word_counts(langs: list[str | None], cfg: GopherQualityConfig, vocab: pa.Array,
                      gid: np.ndarray, word_doc: np.ndarray) -> list[int | None]:  # fmt: skip
    """Each document's stop words present (an entry of its language's list counted each time
    it is listed; None where the language has no list)."""
    lists = [cfg.stop_words.get(lang or cfg.lang_if_null or "") for lang in langs]
    names = sorted({lang or cfg.lang_if_null or "" for lang in langs if lang or cfg.lang_if_null})
    names = [name for name in names if name in cfg.stop_words]
    if not names:
        return [None] * len(langs)
    listed = sorted({w for name in names for w in cfg.stop_words[name]})
    if not listed:
        return [None if stop is None else 0 for stop in lists]
    where = pc.fill_null(pc.index_in(vocab, value_set=pa.array(listed, vocab.type)), -1)
    where = where.to_numpy()  # each vocabulary word's index in ``listed`` (-1: none)
    times = np.zeros((len(names) + 1, len(listed)), dtype=np.int64)  # last row: no list
    for g, name in enumerate(names):
        for w in cfg.stop_words[name]:
            times[g, listed.index(w)] += 1
    group = np.asarray([names.index(x) if x in names else len(names) for x in (
        lang or cfg.lang_if_null or "" for lang in langs)], dtype=np.int64)  # fmt: skip
    hit = np.flatnonzero(where[gid] >= 0)  # words on some language's list
    doc, entry = word_doc[hit], where[gid[hit]]
    present = np.unique(doc * len(listed) + entry)  # distinct (document, listed word)
    doc, entry = present // len(listed), present % len(listed)
    counts = np.bincount(doc, weights=times[group[doc], entry], minlength=len(langs))
    return [None if stop is None else int(c) for stop, c in zip(lists, counts, strict=True)]


def gopher_quality(text: str, lines: list[str], words: DocWords, lang: str | None,
                   cfg: GopherQualityConfig) -> dict[str, Any]:  # fmt: skip
    """Gopher quality measurements of one document."""
    n_words = words.words
    # words of unspaced scripts are characters: their length says nothing; a mixed document's
    # mean length is that of its other words (none: cannot judge)
    unspaced = lang in cfg.unspaced_langs or not words.spaced_words
    hashes = text.count("#")
    ellipses = text.count("...") + text.count("…")
    return {
        "gopher_words": n_words,
        "gopher_mean_word_length": (
            None
            if unspaced and n_words
            else words.spaced_chars / words.spaced_words
            if words.spaced_words
            else 0.0
        ),
        "gopher_symbol_ratio": max(hashes, ellipses) / max(n_words, 1),
        "gopher_bullet_lines": _fraction(
            sum(1 for line in lines if line.lstrip().startswith(BULLETS)), len(lines)
        ),
        "gopher_ellipsis_lines": _fraction(
            sum(1 for line in lines if line.rstrip().endswith(ELLIPSES)), len(lines)
        ),
        "gopher_alpha_words": (
            1.0 - words.non_alpha_tokens / words.tokens if words.tokens else 0.0
        ),
        "gopher_stop_words": words.stop_words,
    }


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items equal to an earlier one, their characters)."""
    seen: set[str] = set()
    n = chars = 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)


def ngram_repetition(words: list[str], top_ns: list[int], dup_ns: list[int]
                     ) -> tuple[dict[int, int], dict[int, int]]:  # fmt: skip
    """Characters of the most repeated n-gram × its count (``top_ns``) and characters of words
    covered by repeated n-grams (``dup_ns``), from rolling 64-bit hashes of word ids."""
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) + 1 for w in words), np.uint64, len(words))
    lens = np.fromiter(map(len, words), np.int64, len(words))
    return ngram_repetition_ids(ids, lens, top_ns, dup_ns)


def ngram_repetition_ids(ids: np.ndarray, lens: np.ndarray, top_ns: list[int], dup_ns: list[int]
                         ) -> tuple[dict[int, int], dict[int, int]]:  # fmt: skip
    """:func:`ngram_repetition` of the words with these ids (uint64, each word's index among
    the distinct words in order of first occurrence, from 1) and characters."""
    m = len(ids)
    top = dict.fromkeys(top_ns, 0)
    dup = dict.fromkeys(dup_ns, 0)
    if m < 2:
        return top, dup
    cum = np.concatenate(([0], np.cumsum(lens)))
    h = ids.copy()
    # an n-gram can repeat only where the (n-1)-gram at the same start repeats: each n looks
    # only at those starts (all of an n-gram's occurrences are among them), a few percent of
    # the text for n >= 4 in prose
    repeats = np.bincount(ids)[ids] >= 2  # words that occur twice
    for n in range(2, max([*top_ns, *dup_ns, 1]) + 1):
        if n > m:
            break
        h = h[:-1] * _HASH_MULT + ids[n - 1 :]
        at = np.flatnonzero(repeats[: len(h)])
        if len(at) < 2:
            break
        # np.unique(h[at], return_index, return_counts) without its inverse: the starts in
        # order of hash (stable: each hash's first start first), where each hash begins
        order = np.argsort(h[at], kind="stable")
        ordered = at[order]
        hashes = h[ordered]
        begins = np.empty(len(at), dtype=bool)
        begins[0] = True
        np.not_equal(hashes[1:], hashes[:-1], out=begins[1:])
        bounds = np.flatnonzero(begins)
        counts = np.diff(np.append(bounds, len(at)))
        repeats = np.zeros(len(h), dtype=bool)
        repeats[ordered[np.repeat(counts >= 2, counts)]] = True
        if n in top:
            best = int(np.argmax(counts))
            if counts[best] >= 2:
                start = int(ordered[bounds[best]])
                top[n] = int(counts[best]) * int(cum[start + n] - cum[start] + n - 1)
        if n in dup:
            starts = ordered[~begins]  # every later occurrence of a repeated n-gram
            if len(starts):
                delta = np.bincount(starts, minlength=m + 1) - np.bincount(
                    starts + n, minlength=m + 1
                )
                covered = np.cumsum(delta[:m]) > 0
                dup[n] = int(lens[covered].sum())
    return top, dup


def gopher_repetition(text: str, lines: list[str], words: DocWords,
                      cfg: GopherRepetitionConfig) -> dict[str, Any]:  # fmt: skip
    """Gopher repetition measurements of one document."""
    chars = max(len(text), 1)
    paragraphs = [p.strip() for p in _PARAGRAPHS.split(text.strip())]
    para_dup, para_dup_chars = _duplicates(paragraphs)
    stripped = [line.strip() for line in lines]
    line_dup, line_dup_chars = _duplicates(stripped)
    top, dup = ngram_repetition_ids(
        words.ids, words.lengths, sorted(cfg.top_ngrams), sorted(cfg.dup_ngrams)
    )
    out: dict[str, Any] = {
        "gopher_dup_para_frac": _fraction(para_dup, len(paragraphs)),
        "gopher_dup_para_char_frac": para_dup_chars / chars,
        "gopher_dup_line_frac": _fraction(line_dup, len(lines)),
        "gopher_dup_line_char_frac": line_dup_chars / chars,
    }
    out.update({f"gopher_top_{n}gram": c / chars for n, c in top.items()})
    out.update({f"gopher_dup_{n}gram": c / chars for n, c in dup.items()})
    return out


def c4_lines(lines: list[str], cfg: C4Config) -> tuple[list[str], dict[str, Any]]:
    """C4's line filter: the kept lines and the document flags (lorem ipsum, curly bracket,
    sentences in the kept lines)."""
    kept: list[str] = []
    lorem = False
    curly_lines = 0
    for raw in lines:
        line = raw.strip()
        # the checks that drop a line are independent: the cheap end-of-line test first, so
        # that most dropped lines are never split into words
        cited = C4_CITATION.sub("", line) if cfg.remove_citations and "[" in line else line
        if cfg.terminal_punct and (
            not cited.endswith(C4_END_PUNCTUATION + NON_LATIN_TERMINAL) or cited.endswith("...")
        ):
            continue
        words = line.split()
        if (
            cfg.max_word_length is not None
            and len(line) > cfg.max_word_length
            and any(len(w) > cfg.max_word_length for w in words)
        ):
            continue
        line = cited
        if (  # an unspaced-script character counts as a word
            cfg.min_words_per_line is not None
            and len(words) < cfg.min_words_per_line
            and (UNSPACED_CHAR.search(line) is None or line_words(line) < cfg.min_words_per_line)
        ):
            continue
        low = line.lower()
        if cfg.lorem_ipsum and "lorem ipsum" in low:
            lorem = True
        if cfg.javascript and "javascript" in low:
            continue
        if cfg.curly_bracket and "{" in line:
            curly_lines += 1
        if cfg.policy and any(h in low for h in _POLICY_HINTS) and any(p in low for p in C4_POLICY):
            continue
        kept.append(line)
    # the sentence ends of every kept line in one pass (no sentence end spans a line); a line
    # without one counts as one sentence
    sentences = count_sentences("\n".join(kept)) + sum(
        1 for line in kept if not line.endswith(_SENTENCE_CLOSED) and count_sentences(line) == 0
    )
    flags = {
        "c4_lines_removed": len(lines) - len(kept),
        "c4_sentences": sentences,
        "c4_lorem_ipsum": lorem,
        "c4_curly_bracket": curly_lines > 0
        and curly_lines >= cfg.curly_bracket_min_lines * len(kept),
    }
    return kept, flags


def fineweb(text: str, lines: list[str], words: DocWords, cfg: FineWebConfig) -> dict[str, Any]:
    """FineWeb measurements of one document (lines: the non-blank lines)."""
    n = len(lines)
    _, dup_chars = _duplicates(lines)
    return {
        "fineweb_line_punct": _fraction(
            sum(1 for line in lines if line.rstrip().endswith(FINEWEB_TERMINAL)), n
        ),
        "fineweb_short_lines": _fraction(
            sum(1 for line in lines if len(line.strip()) <= cfg.short_line_length), n
        ),
        "fineweb_dup_chars": _fraction(dup_chars, len(text) - text.count("\n")),
        "fineweb_list_ratio": text.count("\n") / max(words.words, 1),
    }


def _applies(family: RuleFamilyConfig, domain: str | None) -> bool:
    return family.enabled and (family.domains is None or domain in family.domains)


def prose(text: str, listings: list[list[int]]) -> str:
    """``text`` without the lines in ``listings`` (``[start, end)`` line ranges)."""
    lines = text.split("\n")
    for start, end in reversed(listings):
        del lines[start:end]
    return "\n".join(lines)


def measure(
    text: str,
    lang: str | None,
    cfg: HeuristicsConfig,
    domain: str | None = None,
    listings: list[list[int]] | None = None,
    words: DocWords | None = None,
) -> tuple[dict[str, Any], str]:
    """The measurements of every family that applies to ``domain`` (enabled, and ``domain`` in
    its ``domains``) on the prose of ``text`` (without the ``listings`` line ranges: code and
    command listings), and the text after the C4 rewrite (of the prose). ``words``: the prose's
    :class:`DocWords` when the batch measured them (:func:`score`)."""
    if listings:
        text = prose(text, listings)
    lines = [line for line in text.split("\n") if line.strip()]
    if words is None:
        words = batch_words(pa.array([text], pa.large_string()), [lang], cfg.gopher_quality)[0]
    row: dict[str, Any] = {}
    if _applies(cfg.gopher_quality, domain):
        row.update(gopher_quality(text, lines, words, lang, cfg.gopher_quality))
    if _applies(cfg.gopher_repetition, domain):
        row.update(gopher_repetition(text, lines, words, cfg.gopher_repetition))
    if _applies(cfg.fineweb, domain):
        row.update(fineweb(text, lines, words, cfg.fineweb))
    if _applies(cfg.c4, domain):
        kept, flags = c4_lines(lines, cfg.c4)
        row.update(flags)
        if cfg.c4.rewrite:
            text = "\n".join(kept)
    return row, text


# ---------------------------------------------------------------------------------------------
# the stage


def columns(cfg: HeuristicsConfig) -> dict[str, pa.DataType]:
    """Score columns the stage adds with ``cfg``, in order."""
    f32, i32 = pa.float32(), pa.int32()
    cols: dict[str, pa.DataType] = {}
    if cfg.gopher_quality.enabled:
        cols |= {"gopher_words": i32, "gopher_mean_word_length": f32, "gopher_symbol_ratio": f32,
                 "gopher_bullet_lines": f32, "gopher_ellipsis_lines": f32,
                 "gopher_alpha_words": f32, "gopher_stop_words": i32}  # fmt: skip
    rep = cfg.gopher_repetition
    if rep.enabled:
        cols |= dict.fromkeys(
            ["gopher_dup_para_frac", "gopher_dup_para_char_frac", "gopher_dup_line_frac",
             "gopher_dup_line_char_frac"], f32)  # fmt: skip
        cols |= {f"gopher_top_{n}gram": f32 for n in sorted(rep.top_ngrams)}
        cols |= {f"gopher_dup_{n}gram": f32 for n in sorted(rep.dup_ngrams)}
    if cfg.fineweb.enabled:
        cols |= dict.fromkeys(
            ["fineweb_line_punct", "fineweb_short_lines", "fineweb_dup_chars",
             "fineweb_list_ratio"], f32)  # fmt: skip
    if cfg.c4.enabled:
        cols |= {"c4_lines_removed": i32, "c4_sentences": i32, "c4_lorem_ipsum": pa.bool_(),
                 "c4_curly_bracket": pa.bool_()}  # fmt: skip
    return cols


def _meta_field(table: pa.Table, key: str) -> list[Any]:
    """``key`` of each document's ``meta`` JSON (None where absent)."""
    if "meta" not in table.column_names:
        return [None] * table.num_rows
    out: list[Any] = []
    for meta in table["meta"].to_pylist():
        fields = json.loads(meta) if meta and key in meta else None
        out.append(fields.get(key) if isinstance(fields, dict) else None)
    return out


def _listings(table: pa.Table) -> list[list[list[int]] | None]:
    """Each document's code/command listing line ranges (meta ``code_lines``), if any."""
    return _meta_field(table, CODE_LINES)


def score(table: pa.Table, cfg: HeuristicsConfig) -> pa.Table:
    """Add one column per rule (null for skipped domains); rewrite ``text`` if C4 rewrites."""
    texts = table["text"].to_pylist()
    n = len(texts)
    langs = table["lang"].to_pylist() if "lang" in table.column_names else [None] * n
    domains = table["domain"].to_pylist() if "domain" in table.column_names else [None] * n
    cols = columns(cfg)
    values: dict[str, list[Any]] = {c: [None] * n for c in cols}
    errors: list[str | None] = [None] * n
    skip = set(cfg.skip_domains)
    listings = _listings(table) if cfg.exclude_listings else [None] * n
    measured = [i for i in range(n) if domains[i] not in skip]
    prose_texts = {i: prose(texts[i], listings[i]) for i in measured if listings[i]}
    batch = _batch_words(table, measured, prose_texts, [langs[i] for i in measured], cfg)
    for i, words in zip(measured, batch, strict=True):
        text, lang, domain = prose_texts.get(i, texts[i]), langs[i], domains[i]
        try:
            row, rewritten = measure(text, lang, cfg, domain, None, words=words)
            if cfg.c4.enabled and cfg.c4.rewrite:
                texts[i] = rewritten
        except Exception as e:  # one bad document is quarantined, not a crashed part
            errors[i] = f"heuristics_error:{type(e).__name__}"
            continue
        for c, v in row.items():
            values[c][i] = v
    out = table
    if cfg.c4.enabled and cfg.c4.rewrite:
        col = out.column_names.index("text")
        out = out.set_column(col, out.schema.field("text"), pa.array(texts, pa.large_string()))
    for c, dtype in cols.items():
        out = out.append_column(pa.field(c, dtype), pa.array(values[c], dtype))
    if any(e is not None for e in errors):
        out = out.append_column(pa.field(ERROR_COLUMN, pa.string()), pa.array(errors, pa.string()))
    return out


# documents per batch_words call: its arrays (one entry per word) stay a few MB, so they are
# reused from the heap instead of freshly mapped and zeroed by the kernel each time (a whole
# part's 5 M words at once cost ~1 s of system time and twice the peak memory, same results)
BATCH_WORDS_DOCS = 256


def _batch_words(table: pa.Table, measured: list[int], prose_texts: dict[int, str],
                 langs: list[str | None], cfg: HeuristicsConfig) -> list[DocWords | None]:  # fmt: skip
    """:func:`batch_words` of the ``measured`` rows' prose, ``BATCH_WORDS_DOCS`` documents at a
    time (None each where a call fails: :func:`measure` then splits each document itself, so a
    bad one is quarantined alone)."""
    texts = table["text"].combine_chunks()
    if len(measured) < table.num_rows:
        texts = texts.take(pa.array(measured, pa.int64()))
    if prose_texts:
        at = [k for k, i in enumerate(measured) if i in prose_texts]
        texts = replace_rows(
            pc.cast(texts, pa.large_string()),
            np.asarray(at, dtype=np.int64),
            pa.array([prose_texts[measured[k]] for k in at], pa.large_string()),
        )
    out: list[DocWords | None] = []
    for start in range(0, len(texts), BATCH_WORDS_DOCS):
        end = start + BATCH_WORDS_DOCS
        try:
            out.extend(batch_words(texts.slice(start, end - start), langs[start:end],
                                   cfg.gopher_quality))  # fmt: skip
        except Exception:  # noqa: BLE001 (measure() quarantines the document that fails)
            out.extend([None] * len(langs[start:end]))
    return out


def _col(table: pa.Table, name: str, fill: float) -> np.ndarray:
    """A score column as float64, nulls (skipped documents and rules) filled with ``fill``."""
    values = pc.fill_null(pc.cast(table[name], pa.float64()), fill)
    return values.to_numpy(zero_copy_only=False)


def _above(table: pa.Table, name: str, limit: float | np.ndarray | None) -> np.ndarray:
    """Score above ``limit`` (one value, or one per row with NaN for "rule off")."""
    if limit is None:
        return np.zeros(table.num_rows, dtype=bool)
    with np.errstate(invalid="ignore"):
        return _col(table, name, -np.inf) > limit  # NaN compares False


def _below(table: pa.Table, name: str, limit: float | np.ndarray | None) -> np.ndarray:
    if limit is None:
        return np.zeros(table.num_rows, dtype=bool)
    with np.errstate(invalid="ignore"):
        return _col(table, name, np.inf) < limit


def sections(table: pa.Table) -> np.ndarray:
    """Whether each document is a later section of a multi-page document (its ``meta`` holds
    ``section_of``, set by the HTML reader: :func:`curate.readers.html.section_of`)."""
    return np.asarray([v is not None for v in _meta_field(table, SECTION_OF)], dtype=bool)


def rules(table: pa.Table, cfg: HeuristicsConfig) -> Rules:
    """One reason per rule, Gopher quality → Gopher repetition → C4 → FineWeb; a family's
    thresholds follow the document's language where its ``by_lang`` sets one. The length
    minima (too few words, too few sentences) judge a document's length, so they do not judge
    a page that is one section of a longer document (:func:`sections`) unless
    ``section_length`` is on; the maxima and every other rule do."""
    out: dict[str, np.ndarray] = {}
    langs = batch_langs(table)
    judged = np.ones(table.num_rows, dtype=bool) if cfg.section_length else ~sections(table)
    q = cfg.gopher_quality
    if q.enabled:

        def lim(field: str) -> np.ndarray:
            return q.limits(field, langs)

        out["gopher_word_count"] = (
            _below(table, "gopher_words", lim("min_words")) & judged
        ) | _above(table, "gopher_words", lim("max_words"))
        out["gopher_mean_word_length"] = _below(
            table, "gopher_mean_word_length", lim("min_mean_word_length")
        ) | _above(table, "gopher_mean_word_length", lim("max_mean_word_length"))
        out["gopher_symbol_ratio"] = _above(table, "gopher_symbol_ratio", lim("max_symbol_ratio"))
        out["gopher_bullet_lines"] = _above(table, "gopher_bullet_lines", lim("max_bullet_lines"))
        out["gopher_ellipsis_lines"] = _above(
            table, "gopher_ellipsis_lines", lim("max_ellipsis_lines")
        )
        out["gopher_alpha_words"] = _below(table, "gopher_alpha_words", lim("min_alpha_words"))
        out["gopher_stop_words"] = _below(table, "gopher_stop_words", lim("min_stop_words"))
    r = cfg.gopher_repetition
    if r.enabled:
        for name, field in [
            ("gopher_dup_para_frac", "max_dup_para_frac"),
            ("gopher_dup_para_char_frac", "max_dup_para_char_frac"),
            ("gopher_dup_line_frac", "max_dup_line_frac"),
            ("gopher_dup_line_char_frac", "max_dup_line_char_frac"),
        ]:
            out[name] = _above(table, name, r.limits(field, langs))
        for kind, grams in (("top", r.top_ngrams), ("dup", r.dup_ngrams)):
            for k, limit in sorted(grams.items()):
                per_lang = r.limits(f"{kind}_ngrams.{k}", langs, limit)
                out[f"gopher_{kind}_{k}gram"] = _above(table, f"gopher_{kind}_{k}gram", per_lang)
    c4 = cfg.c4
    if c4.enabled:
        out["c4_lorem_ipsum"] = _above(table, "c4_lorem_ipsum", 0.5 if c4.lorem_ipsum else None)
        out["c4_curly_bracket"] = _above(
            table, "c4_curly_bracket", 0.5 if c4.curly_bracket else None
        )
        out["c4_too_few_sentences"] = (
            _below(table, "c4_sentences", c4.limits("min_sentences", langs)) & judged
        )
    f = cfg.fineweb
    if f.enabled:
        out["fineweb_line_punct"] = _below(
            table, "fineweb_line_punct", f.limits("min_line_punct", langs)
        )
        out["fineweb_short_lines"] = _above(
            table, "fineweb_short_lines", f.limits("max_short_lines", langs)
        )
        out["fineweb_dup_chars"] = _above(
            table, "fineweb_dup_chars", f.limits("max_dup_chars", langs)
        )
        out["fineweb_list_ratio"] = _above(
            table, "fineweb_list_ratio", f.limits("max_list_ratio", langs)
        )
    return out


HEURISTICS = Stage(name="heuristics", config=HeuristicsConfig, score=score, rules=rules)
