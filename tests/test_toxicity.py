"""Toxicity word lists on real fortune files: offensive collections vs regular ones."""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.filters.toxicity import (
    TOXICITY,
    ToxicityConfig,
    available_langs,
    compile_words,
    count_hits,
    count_words,
    word_list,
)
from curate.schema import docs_table

FORTUNES = Path(__file__).resolve().parents[1] / "data" / "sample" / "fortune"
HTML = Path(__file__).resolve().parents[1] / "data" / "sample" / "html"


def fortune_entries(package: str) -> list[str]:
    """Entries of a fortunes package (separated by lines holding only ``%``).

    Debian ships some offensive collections ROT13-encoded (fortune's STR_ROTATED flag, read
    with ``fortune -o``): fortunes-es-off is, fortunes-it-off is not. Decoded here so the
    test sees what a reader that honours the flag would see.
    """
    entries: list[str] = []
    for path in sorted((FORTUNES / package).rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text("utf-8", "replace")
        if package == "fortunes-es-off":
            text = codecs.decode(text, "rot13")
        entries += [e.strip() for e in re.split(r"^%$", text, flags=re.M) if e.strip()]
    return entries


def _table(texts: list[str], lang: str | None) -> pa.Table:
    return docs_table(
        [
            {"id": str(i), "text": t, "source": "f", "offset": i, "domain": "prose",
             "format": "text", "lang": lang}
            for i, t in enumerate(texts)
        ]
    )  # fmt: skip


def _measure(package: str, lang: str, cfg: ToxicityConfig) -> dict[str, float]:
    entries = fortune_entries(package)
    result = TOXICITY.run(_table(entries, lang), cfg)
    scored = TOXICITY.score(_table(entries, lang), cfg)
    assert result.stats.docs_in == len(entries) == result.stats.kept + result.stats.removed_total
    assert set(result.stats.removed) <= {f"toxic:{lang}"}
    return {
        "entries": len(entries),
        "flagged": result.stats.removed_total / len(entries),
        "any_hit": float(np.mean(scored["toxicity_hits"].to_numpy() > 0)),
        "mean": float(np.mean(scored["toxicity"].to_numpy())),
    }


def test_offensive_fortunes_score_higher_than_regular() -> None:
    cfg = ToxicityConfig()
    rows = {
        ("it", "off"): _measure("fortunes-it-off", "it", cfg),
        ("it", "regular"): _measure("fortunes-it", "it", cfg),
        ("es", "off"): _measure("fortunes-es-off", "es", cfg),
        ("es", "regular"): _measure("fortunes-es", "es", cfg),
        ("en", "regular"): _measure("fortunes", "en", cfg),
    }
    print()
    for (lang, kind), r in rows.items():
        print(
            f"{lang} {kind:8s} {r['entries']:5d} entries  flagged {r['flagged']:.4f}  "
            f"any hit {r['any_hit']:.4f}  mean score {r['mean']:.5f}"
        )
    it_off, it_reg = rows["it", "off"], rows["it", "regular"]
    assert it_off["flagged"] >= 5 * it_reg["flagged"] and it_off["flagged"] > 0.03
    assert it_off["mean"] >= 5 * it_reg["mean"]
    assert it_off["any_hit"] >= 5 * it_reg["any_hit"]
    # fortunes-es-off is mostly truck slogans and sexist jokes in everyday words (polla, pedos,
    # cagaran are not in the 71-entry Spanish list): the list separates the collections only
    # weakly, so only the ordering is asserted; the numbers above are the finding.
    es_off, es_reg = rows["es", "off"], rows["es", "regular"]
    assert es_off["mean"] >= es_reg["mean"] and es_off["any_hit"] >= es_reg["any_hit"]
    # on regular text the default rule removes (almost) nothing
    for lang in ("it", "es", "en"):
        assert rows[lang, "regular"]["flagged"] <= 0.01


def test_reason_carries_the_language_and_null_lang_uses_the_named_fallback() -> None:
    entries = fortune_entries("fortunes-it-off")
    langs = ["it"] * 400 + [None] * (len(entries) - 400)
    table = docs_table(
        [
            {"id": str(i), "text": t, "source": "f", "offset": i, "domain": "prose",
             "format": "text", "lang": lang}
            for i, (t, lang) in enumerate(zip(entries, langs, strict=True))
        ]
    )  # fmt: skip
    result = TOXICITY.run(table, ToxicityConfig(fallback_langs=["*"]))
    assert set(result.stats.removed) == {"toxic:it", "toxic:und"}
    assert (
        result.removed["reason"].to_pylist().count("toxic:it") == result.stats.removed["toxic:it"]
    )
    # null lang with only the English list configured: Italian words are no longer seen
    english_only = TOXICITY.score(table, ToxicityConfig(fallback_langs=["en"]))
    all_lists = TOXICITY.score(table, ToxicityConfig(fallback_langs=["*"]))
    hits_en = english_only["toxicity_hits"].to_numpy()[400:]
    hits_all = all_lists["toxicity_hits"].to_numpy()[400:]
    assert hits_all.sum() > 2 * hits_en.sum()
    # without a named fallback, a null lang is not judged by any list: null scores, kept
    default = TOXICITY.run(table, ToxicityConfig())
    assert set(default.stats.removed) == {"toxic:it"}
    unjudged = TOXICITY.score(table, ToxicityConfig())
    assert unjudged["toxicity"].null_count == unjudged["toxicity_hits"].null_count
    assert unjudged["toxicity"].null_count == len(entries) - 400


def test_a_catalan_page_is_not_judged_by_other_languages_lists() -> None:
    """Catalan has no LDNOOBW list; other lists hold everyday Catalan words (nl: del, pot)."""
    import trafilatura

    pages = sorted(HTML.glob("debian-handbook/**/ca-ES/*.html"))
    texts = [trafilatura.extract(p.read_text("utf-8")) or "" for p in pages]
    assert len(texts) == 2 and all(len(t) > 2000 for t in texts)
    assert "ca" not in available_langs()
    borrowed = TOXICITY.score(_table(texts, "ca"), ToxicityConfig(fallback_langs=["*"]))
    assert max(borrowed["toxicity_hits"].to_pylist()) >= 2  # what borrowing every list sees
    result = TOXICITY.run(_table(texts, "ca"), ToxicityConfig())
    assert result.stats.kept == 2 and result.stats.removed_total == 0
    assert TOXICITY.score(_table(texts, "ca"), ToxicityConfig())["toxicity"].null_count == 2


def test_word_boundaries_multiword_and_case() -> None:
    it = compile_words(word_list("it"))
    # real Italian words that contain list entries must not count: scazzottata ⊃ cazz-,
    # "figura" ⊃ "fig-"; a capitalised entry and one across a line break do
    assert count_hits("una scazzottata, che figura", it) == 0
    assert count_hits("CAZZO!", it) == 1
    assert count_hits("Figlio di\n  puttana", it) == 1  # the longer entry wins, counted once
    es = compile_words(word_list("es"))
    assert count_hits("¡HIJO DE PUTA!", es) == 1  # list entry "Hijo de puta", accents kept
    assert count_hits("el cabrón", es) == 1


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def test_cjk_entries_match_inside_running_text() -> None:
    """Japanese has no spaces: an entry glued into real Japanese text still counts."""
    page = next(HTML.glob("debian-reference-ja/**/*.html"))
    parser = _Text()
    parser.feed(page.read_text("utf-8"))
    text = "".join(parser.parts)
    ja = compile_words(word_list("ja"))
    base = count_hits(text, ja)
    entry = "おっぱい"
    assert entry in word_list("ja")
    cut = next(m.end() for m in re.finditer(r"[\u3040-\u30ff\u4e00-\u9fff]{4}", text))
    assert count_hits(text[:cut] + entry + text[cut:], ja) == base + 1
    # each kana/Han character counts as one word, so the score is not diluted to ~0
    assert count_words(pa.array(["日本語の文章です", "हिन्दी भाषा, ok_1"])).tolist() == [8, 3]


def test_lists_come_from_the_package_with_every_language() -> None:
    langs = available_langs()
    assert {"en", "it", "es", "de", "fr", "ja", "zh", "ru"} <= set(langs)
    assert all(len(word_list(lang)) >= 25 for lang in langs)


def test_classifier_score_is_optional() -> None:
    pytest.importorskip("profanity_check")
    entries = fortune_entries("fortunes")[:500]
    cfg = ToxicityConfig(classifier="profanity_check")
    scored = TOXICITY.score(_table(entries, "en"), cfg)
    clf = scored["toxicity_clf"].to_numpy()
    assert clf.shape == (500,) and ((clf >= 0) & (clf <= 1)).all()
    result = TOXICITY.run(_table(entries, "en"), cfg)
    by_words = (scored["toxicity"].to_numpy() >= cfg.threshold) & (
        scored["toxicity_hits"].to_numpy() >= cfg.min_hits
    )
    by_clf = clf >= cfg.classifier_threshold
    assert result.stats.removed.get("toxic:en", 0) == by_words.sum()
    assert result.stats.removed.get("toxic_classifier:en", 0) == (by_clf & ~by_words).sum() > 0
    assert (
        "toxicity_clf" not in TOXICITY.score(_table(entries, "en"), ToxicityConfig()).column_names
    )


def test_config_forbids_unknown_keys() -> None:
    with pytest.raises(ValueError):
        ToxicityConfig(treshold=0.1)


def test_unjudged_documents_are_counted_per_language_in_the_stats() -> None:
    entries = fortune_entries("fortunes-it-off")[:30]
    langs = ["it"] * 10 + ["ca"] * 15 + [None] * 5
    table = docs_table(
        [
            {"id": str(i), "text": t, "source": "f", "offset": i, "domain": "prose",
             "format": "text", "lang": lang}
            for i, (t, lang) in enumerate(zip(entries, langs, strict=True))
        ]
    )  # fmt: skip
    result = TOXICITY.run(table, ToxicityConfig())
    assert result.stats.unjudged == {"no_word_list:ca": 15, "no_word_list:und": 5}
    assert result.stats.to_dict()["unjudged"] == {"no_word_list:ca": 15, "no_word_list:und": 5}
    merged = result.stats.merge(result.stats)
    assert merged.unjudged == {"no_word_list:ca": 30, "no_word_list:und": 10}
    # a named fallback judges them all: nothing left to count
    assert TOXICITY.run(table, ToxicityConfig(fallback_langs=["*"])).stats.unjudged == {}
