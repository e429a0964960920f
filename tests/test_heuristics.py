"""Heuristic rules on real sample documents: each rule fires on a real document altered to break
it, and stays quiet on the real document it was made from."""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.filters import heuristics
from curate.filters.heuristics import (
    HEURISTICS,
    STOP_WORDS,
    C4Config,
    HeuristicsConfig,
    c4_lines,
    columns,
    ngram_repetition,
    rules,
)
from curate.schema import CODE_LINES, SECTION_OF, doc_id, docs_table
from curate.text import batch_rule_tokens, count_sentences, rule_tokens
from tests.shards_sample import sample_docs, split_parts
from tests.test_toxicity import fortune_entries

ALL_RULES = {
    "gopher_word_count", "gopher_mean_word_length", "gopher_symbol_ratio", "gopher_bullet_lines",
    "gopher_ellipsis_lines", "gopher_alpha_words", "gopher_stop_words", "gopher_dup_para_frac",
    "gopher_dup_para_char_frac", "gopher_dup_line_frac", "gopher_dup_line_char_frac",
    "gopher_top_2gram", "gopher_top_3gram", "gopher_top_4gram", "gopher_dup_5gram",
    "gopher_dup_6gram", "gopher_dup_7gram", "gopher_dup_8gram", "gopher_dup_9gram",
    "gopher_dup_10gram", "c4_lorem_ipsum", "c4_curly_bracket", "c4_too_few_sentences",
    "fineweb_line_punct", "fineweb_short_lines", "fineweb_dup_chars", "fineweb_list_ratio",
}  # fmt: skip
CFG = HeuristicsConfig(fineweb={"max_list_ratio": 0.3})  # every rule on


def _table(items: list[tuple[str, str | None]], domain: str = "prose") -> pa.Table:
    return docs_table(
        [
            {"id": doc_id(f"t{i}", i), "text": text, "source": f"t{i}", "offset": i,
             "domain": domain, "format": "text", "lang": lang}
            for i, (text, lang) in enumerate(items)
        ]
    )  # fmt: skip


@cache
def clean_docs() -> list[str]:
    """Real Devil's Dictionary blocks that pass every rule."""
    table = sample_docs(("prose",))
    masks = rules(HEURISTICS.score(table, CFG), CFG)
    bad = np.logical_or.reduce(list(masks.values()))
    texts = [t for t, b in zip(table["text"].to_pylist(), bad, strict=True) if not b]
    assert len(texts) >= 20
    return texts


def fired(
    text: str, lang: str | None = "en", cfg: HeuristicsConfig = CFG, domain: str = "prose"
) -> set[str]:
    masks = rules(HEURISTICS.score(_table([(text, lang)], domain), cfg), cfg)
    return {name for name, mask in masks.items() if mask[0]}


def words(text: str) -> list[str]:
    return rule_tokens(text).words


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def test_each_rule_fires_on_an_altered_real_document() -> None:
    base, other = clean_docs()[3], clean_docs()[7]
    assert fired(base) == set() and fired(other) == set()
    lines = _lines(base)
    base_words = base.split()
    long_words = [w for w in words(" ".join(clean_docs())) if len(w) >= 11]
    short_words = [w for w in base_words if len(w) <= 2]
    cases: dict[str, str] = {
        "gopher_word_count": fortune_entries("fortunes")[1],
        "gopher_mean_word_length": " ".join(long_words[:300]),
        "gopher_symbol_ratio": "\n".join("# " + line for line in lines),
        "gopher_bullet_lines": "\n".join("- " + line for line in lines),
        "gopher_ellipsis_lines": "\n".join(line.rstrip(".") + "..." for line in lines),
        "gopher_alpha_words": " ".join(f"{w} {i} |" for i, w in enumerate(base_words)),
        "gopher_stop_words": " ".join(w for w in words(base) if w not in STOP_WORDS["en"]) + ".",
        "gopher_dup_para_frac": "\n\n".join([base] * 3),
        "gopher_dup_line_frac": "\n".join(lines + lines[: len(lines) // 2]),
        "gopher_top_2gram": base + "\n" + " ".join(["ugly frock"] * 200) + ".",
        "gopher_top_3gram": base + "\n" + " ".join([" ".join(words(base)[10:13])] * 150) + ".",
        "gopher_top_4gram": base + "\n" + " ".join([" ".join(words(base)[20:24])] * 120) + ".",
        "gopher_dup_5gram": base + "\n\n" + other + "\n\n" + base,
        "c4_lorem_ipsum": base + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
        "c4_curly_bracket": base + "\nThe dictionary { holds } definitions in braces.",
        "c4_too_few_sentences": fortune_entries("fortunes")[1],
        "fineweb_line_punct": "\n".join(line.rstrip(".!?;:,\"'") for line in lines),
        "fineweb_short_lines": "\n".join(
            " ".join(base_words[i : i + 3]) for i in range(0, len(base_words), 3)
        ),
        "fineweb_dup_chars": base + "\n" + lines[5] + "\n" + lines[6] + "\n" + lines[5],
        "fineweb_list_ratio": "\n".join(base_words),
    }
    assert short_words  # (a too-short mean length is covered by the unit check below)
    seen: set[str] = set()
    for rule, text in cases.items():
        got = fired(text)
        assert rule in got, f"{rule} did not fire: {got}"
        seen |= got
    # the repeated-paragraph document breaks all duplicate-paragraph/line/n-gram rules at once
    assert {
        "gopher_dup_para_char_frac", "gopher_dup_line_char_frac",
        *(f"gopher_dup_{n}gram" for n in range(5, 11)),
    } <= fired("\n\n".join([base] * 3))  # fmt: skip
    assert fired(" ".join(short_words * 30)) >= {"gopher_mean_word_length"}
    assert seen | fired("\n\n".join([base] * 3)) == ALL_RULES


def test_stop_words_follow_the_language() -> None:
    german = " ".join(fortune_entries("fortunes-de")[:40])
    assert "gopher_stop_words" not in fired(german, "de")
    assert "gopher_stop_words" in fired(german, "en")
    assert "gopher_stop_words" not in fired(german, "sw")  # no list for Swahili: rule skipped
    assert "gopher_stop_words" in fired(german, None)  # null lang counts as lang_if_null = en


def _page(pattern: str) -> str:
    import trafilatura

    from tests.test_toxicity import HTML

    page = next(HTML.glob(pattern))
    return trafilatura.extract(page.read_text("utf-8")) or ""


def test_unspaced_languages_split_by_character() -> None:
    text = _page("debian-reference-ja/**/*.html")
    assert len(text) > 5000
    word_rules = {"gopher_word_count", "gopher_mean_word_length", "gopher_stop_words",
                  "gopher_symbol_ratio", "gopher_alpha_words"}  # fmt: skip
    assert "gopher_stop_words" in fired(text, "fr")  # measured as if it were French: no stop words
    assert not word_rules & fired(text, "ja")
    scored = HEURISTICS.score(_table([(text, "ja")]), CFG)
    assert scored["gopher_mean_word_length"][0].as_py() is None  # characters: cannot judge
    assert scored["gopher_words"][0].as_py() > 2000 and scored["gopher_stop_words"][0].as_py() >= 6
    cjk_only = "".join(re.findall(r"[\u3040-\u30ff\u4e00-\u9fff]+", text))[:3000]
    assert "gopher_stop_words" in fired(cjk_only, "de")  # not German: no German stop words
    assert "gopher_mean_word_length" not in fired(cjk_only, "de")  # characters: cannot judge
    mixed = cjk_only[:1500] + "\n" + " ".join(["extraordinarily"] * 200)
    assert "gopher_mean_word_length" in fired(mixed, "en")  # judged on its spaced words
    assert not word_rules & fired(cjk_only, "ja")


def default_heuristics() -> HeuristicsConfig:
    """The heuristics options of configs/default.yaml."""
    from curate.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")
    (entry,) = [e for e in cfg.stages if e.name == "heuristics"]
    return HeuristicsConfig(**entry.options)


@pytest.mark.parametrize(
    ("pattern", "lang"),
    [("debian-reference-ja/**/*.html", "ja"), ("debian-reference-zh-cn/**/*.html", "zh")],
)
def test_japanese_and_chinese_pages_keep_their_sentences(pattern: str, lang: str) -> None:
    """C4 knew no 。！？ and needed 3 space-separated words per line: a real page counted 0 or 1
    sentence and went as c4_too_few_sentences."""
    text = _page(pattern)
    cfg = default_heuristics()
    scored = HEURISTICS.score(_table([(text, lang)], domain="web"), cfg)
    assert scored["c4_sentences"][0].as_py() >= 50
    assert fired(text, lang, cfg, domain="web") == set()


def test_a_manual_with_one_curly_bracket_is_kept() -> None:
    """One `{` (a shell brace expansion) in a long English page is not code; a page of code
    lines still is (configs/default.yaml's curly_bracket_min_lines)."""
    text = _page("debian-reference-en/**/*.html")
    cfg = default_heuristics()
    lines = _lines(text)
    brace = "Unpack it with tar -xf file.tar.{gz,bz2,xz} before you build it."
    doc = "\n".join([*lines[:40], brace, *lines[40:]])
    assert "c4_curly_bracket" in fired(doc, "en", HeuristicsConfig())  # C4's rule: any `{`
    assert fired(doc, "en", cfg, domain="web") == set()
    code = "\n".join(f"Then if (x > {i}) {{ y = {i}; }} holds." for i in range(60))
    assert "c4_curly_bracket" in fired(text + "\n" + code, "en", cfg, domain="web")


def test_ngram_repetition_matches_brute_force() -> None:
    ws = words(clean_docs()[0])[:120]
    ws = ws + ws[10:40] + ws[:7]
    top, dup = ngram_repetition(ws, [2, 3, 4], [5, 6, 10])
    for n in (5, 6, 10):
        grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
        covered = np.zeros(len(ws), bool)
        seen: set[tuple[str, ...]] = set()
        for i, g in enumerate(grams):
            if g in seen:
                covered[i : i + n] = True
            seen.add(g)
        assert dup[n] == sum(len(w) for w, c in zip(ws, covered, strict=True) if c) > 0
    for n in (2, 3, 4):
        counts: dict[tuple[str, ...], int] = {}
        for i in range(len(ws) - n + 1):
            g = tuple(ws[i : i + n])
            counts[g] = counts.get(g, 0) + 1
        best = max(counts.values())
        chars = {c * (len(" ".join(g))) for g, c in counts.items() if c == best}
        assert top[n] in chars
    assert ngram_repetition(["one"], [2], [5]) == ({2: 0}, {5: 0})


def test_c4_rewrite_drops_lines_and_citations() -> None:
    base = clean_docs()[2]
    lines = _lines(base)
    doc = "\n".join(
        [
            lines[0] + " [12]",
            "Please enable JavaScript to view the definitions.",
            "This site uses cookies to remember you.",
            "A heading without punctuation",
            "Too short.",
            *lines[1:],
        ]
    )
    kept, flags = c4_lines(_lines(doc), C4Config())
    assert not any("javascript" in k.lower() or "cookies" in k for k in kept)
    assert "[12]" not in kept[0] if kept else True
    assert all(k.endswith((".", "?", "!", '"', "'")) and len(k.split()) >= 3 for k in kept)
    assert flags["c4_lines_removed"] == len(_lines(doc)) - len(kept) >= 4
    out = HEURISTICS.score(_table([(doc, "en")]), CFG)
    assert out["text"][0].as_py() == "\n".join(kept)
    kept_text = HEURISTICS.score(_table([(doc, "en")]), HeuristicsConfig(c4={"rewrite": False}))
    assert kept_text["text"][0].as_py() == doc


def test_sample_counters_code_skipped_and_columns() -> None:
    table = split_parts(sample_docs(), 4)[0]  # every 4th document: ~2,500, all four domains
    assert set(table["domain"].to_pylist()) == {"rst", "fortune", "code", "prose"}
    result = HEURISTICS.run(table, CFG)
    s = result.stats
    assert s.docs_in == table.num_rows == s.kept + s.removed_total + s.quarantined_total
    assert set(s.removed) <= ALL_RULES and s.removed["gopher_word_count"] > 500  # fortunes
    assert sum(s.removed.values()) == result.removed.num_rows
    code_ids = set(table.filter(pa.compute.equal(table["domain"], "code"))["id"].to_pylist())
    assert code_ids <= set(result.kept["id"].to_pylist())
    scored = HEURISTICS.score(table, CFG)
    assert list(columns(CFG)) == scored.column_names[len(table.column_names) :]
    code = scored.filter(pa.compute.equal(scored["domain"], "code"))
    assert code["gopher_words"].null_count == code.num_rows
    # switching a family off removes its columns and its reasons
    only_q = HeuristicsConfig(gopher_repetition={"enabled": False}, c4={"enabled": False},
                              fineweb={"enabled": False})  # fmt: skip
    q = HEURISTICS.run(table, only_q)
    assert all(r.startswith("gopher_") for r in q.stats.removed)
    assert "c4_sentences" not in HEURISTICS.score(table, only_q).column_names


def test_text_helpers() -> None:
    tok = rule_tokens("The (quick), brown — fox 42 jumped… «over»\n$ 3.14")
    assert tok.words == ["the", "quick", "brown", "fox", "42", "jumped", "over", "3.14"]
    assert tok.non_alpha_tokens == 4  # —, 42, $, 3.14
    # unspaced scripts: one word per character; dot leaders are no tokens at all
    assert rule_tokens("日本語の文。").words == ["日", "本", "語", "の", "文"]
    toc = rule_tokens("1.2 Введение . . . . . . . . . . 7\nГлава ........ 9")
    assert toc.words == ["1.2", "введение", "7", "глава", "9"] and toc.non_alpha_tokens == 3
    assert (
        count_sentences("一つ。二つ！三つ？") == 3 and count_sentences("Один. Два? ثلاثة؟ x") == 3
    )


@cache
def _sample_texts() -> list[tuple[str, str | None]]:
    """Every 4th document of data/sample (all domains; web pages in many languages)."""
    table = split_parts(sample_docs(), 4)[0]
    return list(zip(table["text"].to_pylist(), table["lang"].to_pylist(), strict=True))


def test_batch_split_is_rule_tokens() -> None:
    """The batch split (Arrow over every text at once) gives each text what ``rule_tokens``
    gives it: the same words in order, token and non-letter-token counts and unspaced flag, on
    real documents and on every code point of Python's Unicode tables (each alone, inside a
    word and beside a letter: a wrong lower case, whitespace, punctuation or letter class
    changes a count or a word)."""
    real = [t for t, _ in _sample_texts()]
    odd = ["", "   ", " a ", "ΣΑΣ ΟΔΟΣ σ", "İstanbul", ". . . . x ....", ". .. . y", "日本語の文。",
           "K Kelvin ²³ x_y __ 12 ½ ⅷ", "\x1c\x1dz\u3000q\x85r\u2028", "\u1c89 \ua7cb"]  # fmt: skip
    points = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000]
    every = [
        " ".join(f"x {ch} y {ch}a{ch}" for ch in points[k : k + 64])
        for k in range(0, len(points), 64)
    ]
    texts = real + odd + every
    split = batch_rule_tokens(pa.array(texts, pa.large_string()))
    words = split.words.to_pylist()
    for i, text in enumerate(texts):
        ref = rule_tokens(text)
        got = words[split.word_offsets[i] : split.word_offsets[i + 1]]
        assert got == ref.words, text[:80]
        assert split.tokens[i] == len(ref.tokens), text[:80]
        assert split.non_alpha_tokens[i] == ref.non_alpha_tokens, text[:80]
        assert split.unspaced[i] == ref.unspaced, text[:80]


def test_batch_words_match_one_document_at_a_time() -> None:
    """The stage measures every document's words in one batch; each document measured alone
    (a batch of one) has the same scores, so documents do not leak into each other (word ids
    and stop words are per document)."""
    items = _sample_texts()[:60]
    table = _table(items)
    batch = HEURISTICS.score(table, CFG)
    alone = pa.concat_tables([HEURISTICS.score(table.slice(i, 1), CFG) for i in range(len(items))])
    assert batch.equals(alone)


def test_batch_words_in_slices_give_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage measures ``BATCH_WORDS_DOCS`` documents per call: slices of 7 (the last one
    shorter) score like one call over the whole batch."""
    items = _sample_texts()[:60]
    table = _table(items)
    monkeypatch.setattr(heuristics, "BATCH_WORDS_DOCS", len(items))
    whole = HEURISTICS.score(table, CFG)
    monkeypatch.setattr(heuristics, "BATCH_WORDS_DOCS", 7)
    calls: list[int] = []
    real = heuristics.batch_words
    monkeypatch.setattr(
        heuristics, "batch_words", lambda texts, *a: calls.append(len(texts)) or real(texts, *a)
    )
    assert HEURISTICS.score(table, CFG).equals(whole)
    assert calls == [7] * 8 + [4]


def test_c4_sentences_are_each_kept_lines_sentence_ends() -> None:
    """C4's sentence count is the sum over the kept lines of max(sentence ends, 1), counted in
    one pass over the kept lines: the same on real documents and on lines ending in a quote,
    a bracket or CJK punctuation, with and without a sentence end inside."""
    odd = ['He said "no."', 'The word "yes"', "(see above.)", "A list: x, y, z'", "一つ。二つ」",
           "Это так?!", "क्या यह है।", "هل هذا؟", "one. two. three.", "end [1]."]  # fmt: skip
    cfg = C4Config(terminal_punct=False, min_words_per_line=None)
    for text in [t for t, _ in _sample_texts()] + ["\n".join(odd)]:
        kept, flags = c4_lines(_lines(text), cfg)
        assert flags["c4_sentences"] == sum(max(count_sentences(x), 1) for x in kept)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError):
        HeuristicsConfig(gopher={"min_words": 10})
    with pytest.raises(ValueError):
        HeuristicsConfig(c4={"min_sentence": 3})


def test_a_failing_document_is_quarantined(monkeypatch: pytest.MonkeyPatch) -> None:
    import curate.filters.heuristics as heuristics

    docs = clean_docs()[:5]
    real_measure = heuristics.measure

    def measure(text: str, lang: str | None, cfg: HeuristicsConfig, domain: str | None = None,
                listings: list[list[int]] | None = None, **batch):  # type: ignore[no-untyped-def]  # fmt: skip
        if text == docs[2]:
            raise UnicodeError("simulated")
        return real_measure(text, lang, cfg, domain, listings, **batch)

    monkeypatch.setattr(heuristics, "measure", measure)
    result = HEURISTICS.run(_table([(t, "en") for t in docs]), CFG)
    assert result.stats.quarantined == {"heuristics_error:UnicodeError": 1}
    assert result.stats.kept == 4 and result.quarantine["offset"].to_pylist() == [2]


def test_a_short_section_of_a_book_is_judged_by_its_document() -> None:
    """The length minima (Gopher's 50 words, C4's 5 sentences) remove stubs; a page that is one
    section of a multi-page document (meta ``section_of``, from its <link rel> navigation) is
    not a stub however short: only those two minima skip it, every other rule judges it."""
    first = _page("debian-handbook/**/en-US/sect.backup.html").split("\n")[0]
    short = " ".join(first.split()[:30]) + "."  # a real opening paragraph, cut to 30 words
    assert count_sentences(short) < 5 and len(short.split()) < 50
    cfg = default_heuristics()

    def fired_as(text: str, meta: str | None, cfg: HeuristicsConfig = cfg) -> set[str]:
        row = {"id": "a", "text": text, "source": "a", "offset": 0, "domain": "web",
               "format": "html", "lang": "en", "meta": meta}  # fmt: skip
        masks = rules(HEURISTICS.score(docs_table([row]), cfg), cfg)
        return {name for name, mask in masks.items() if mask[0]}

    section = json.dumps({SECTION_OF: "index.html"})
    length_rules = {"gopher_word_count", "c4_too_few_sentences"}
    assert length_rules <= fired_as(short, None)  # a 30-word page: a stub
    assert not length_rules & fired_as(short, section)  # a 30-word section of a book
    judged = cfg.model_copy(update={"section_length": True})
    assert length_rules <= fired_as(short, section, judged)
    other = json.dumps({"url": "https://example.org/a"})  # a JSONL record's own fields
    assert length_rules <= fired_as(short, other)
    # the maxima and the other rules still judge a section: 25 copies repeat every n-gram
    repeated = fired_as("\n".join([first] * 25), section)
    assert {"gopher_dup_line_frac", "gopher_dup_10gram", "fineweb_dup_chars"} <= repeated


def test_code_listings_are_not_judged_as_prose() -> None:
    """A manual that quotes a configuration file (an HTML <pre> block: meta ``code_lines``) is
    judged on its prose: its short, unpunctuated, repeated listing lines are not short lines,
    missing punctuation or duplicate prose; the same lines as prose still are."""
    from curate.readers.html import code_lines, extract_html
    from tests.test_toxicity import HTML

    page = next(HTML.glob("debian-handbook/**/en-US/sect.backup.html")).read_text("utf-8")
    text = extract_html(page)
    listings = code_lines(page, text)
    lines = text.split("\n")
    listing = [line for start, end in listings for line in lines[start:end]]
    assert len(listing) >= 20 and "expire-default: +15 days" in listing
    # the page quotes its listing twice more (a real page, altered)
    quoted = text + "\n" + "\n".join(listing * 2)
    ranges = [*listings, [len(lines), len(lines) + 2 * len(listing)]]
    cfg = default_heuristics()

    def fired_as(text: str, meta: dict | None, cfg: HeuristicsConfig = cfg) -> set[str]:
        row = {"id": "a", "text": text, "source": "a", "offset": 0, "domain": "web",
               "format": "html", "lang": "en", "meta": json.dumps(meta) if meta else None}  # fmt: skip
        masks = rules(HEURISTICS.score(docs_table([row]), cfg), cfg)
        return {name for name, mask in masks.items() if mask[0]}

    assert fired_as(text, {CODE_LINES: listings}) == set()
    assert {"fineweb_short_lines", "gopher_dup_line_frac"} <= fired_as(quoted, None)
    assert fired_as(quoted, {CODE_LINES: ranges}) == set()
    off = cfg.model_copy(update={"exclude_listings": False})
    assert "fineweb_short_lines" in fired_as(quoted, {CODE_LINES: ranges}, off)
    # the C4 rewrite keeps prose lines only
    c4 = HeuristicsConfig(c4={"rewrite": True})
    row = {"id": "a", "text": quoted, "source": "a", "offset": 0, "domain": "web",
           "format": "html", "lang": "en", "meta": json.dumps({CODE_LINES: ranges})}  # fmt: skip
    rewritten = HEURISTICS.score(docs_table([row]), c4)["text"][0].as_py()
    assert "expire-default: +15 days" not in rewritten and len(rewritten) > 500
