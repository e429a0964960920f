"""Language ID on the real debian-handbook locales: many "translations" are English copies.

Ground truth, hand-checkable: the English-vocabulary share of a page = the characters of its words
that also occur in the en-US page of the same name / all its word characters. An untranslated
copy (da-DK, el-GR, ...: only generated labels such as "Afsnit 13.3.1" differ) has a share
≥ 0.9 and must come out ``en``; a translated page has ≤ 0.45 (commands, paths, package names stay
English) and must come out as its folder's language. Pages in between are partial translations
(some paragraphs translated): either answer is right, and nothing else is.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import trafilatura

from curate.filters.langid import (
    LANGID,
    LangIdConfig,
    chunks,
    default_model_path,
    identify,
    load_model,
)
from curate.schema import doc_id, docs_table
from curate.text import rule_tokens
from tests.shards_sample import sample_docs

HANDBOOK = (
    Path(__file__).resolve().parents[1]
    / "data/sample/html/debian-handbook/usr/share/doc/debian-handbook/html"
)
# folder locale → lid.176 label (the model labels Norwegian Bokmål "no")
MODEL_CODE = {"nb": "no"}


@cache
def handbook() -> dict[tuple[str, str], str]:
    """(locale, page) → text extracted with trafilatura, for the 26 locales × 2 pages."""
    return {
        (p.parent.name, p.name): trafilatura.extract(p.read_text("utf-8")) or ""
        for p in sorted(HANDBOOK.glob("*/*.html"))
    }


def english_share(text: str, english: str) -> float:
    vocab = set(rule_tokens(english).words)
    ws = rule_tokens(text).words
    return sum(len(w) for w in ws if w in vocab) / max(sum(map(len, ws)), 1)


def _docs(items: list[tuple[str, str, str]]) -> pa.Table:
    return docs_table(
        [
            {"id": doc_id(src, 0), "text": text, "source": src, "offset": 0, "domain": domain,
             "format": "html"}
            for src, text, domain in items
        ]
    )  # fmt: skip


def test_handbook_locales_and_english_copies() -> None:
    pages = handbook()
    assert len(pages) == 52 and len({loc for loc, _ in pages}) == 26
    keys = sorted(pages)
    table = _docs([(f"{loc}/{page}", pages[loc, page], "web") for loc, page in keys])
    result = LANGID.run(table, LangIdConfig(min_score=0.0))
    assert result.stats.kept == 52  # min_score 0, every language allowed: nothing goes
    scored = LANGID.score(table, LangIdConfig())
    predicted = scored["lang"].to_pylist()
    clear_right = clear = partial_ok = partial = 0
    print()
    for (loc, page), lang in zip(keys, predicted, strict=True):
        folder_lang = loc.split("-")[0]
        folder_lang = MODEL_CODE.get(folder_lang, folder_lang)
        share = english_share(pages[loc, page], pages["en-US", page])
        if share >= 0.9 or share <= 0.45:
            expected = "en" if share >= 0.9 else folder_lang
            clear += 1
            clear_right += lang == expected
            mark = "ok" if lang == expected else f"WRONG (expected {expected})"
        else:
            partial += 1
            partial_ok += lang in {"en", folder_lang}
            mark = "partial"
        print(f"{loc:6s} {page:24s} english share {share:.3f} -> {lang:3s} {mark}")
    accuracy = clear_right / clear
    print(f"clear pages {clear}: accuracy {accuracy:.3f}; partial {partial}: {partial_ok} en/own")
    # measured with lid.176.ftz and 500-char chunks (2000-char chunks: 35/35; partial: 17/17)
    assert clear >= 30 and accuracy >= 0.95
    assert partial_ok == partial
    by_key = dict(zip(keys, predicted, strict=True))
    assert by_key["da-DK", "sect.apt-frontends.html"] == "en"  # an English copy in a da-DK folder
    assert by_key["de-DE", "sect.apt-frontends.html"] == "de"
    assert by_key["ja-JP", "sect.apt-frontends.html"] == "ja"


def test_whole_text_not_a_prefix() -> None:
    """German first 1/4, English after: chunked voting says English, and the English chunks
    are clear evidence (a mixed page is not removed for being mixed)."""
    pages = handbook()
    german = pages["de-DE", "sect.backup.html"][:2000]
    english = pages["en-US", "sect.apt-frontends.html"]
    mixed = german + "\n" + english
    assert len(english) > 3 * len(german)
    (lang,), (score,) = identify([mixed], LangIdConfig())
    assert lang == "en" and score > 0.9
    (lang_de,), _ = identify([german], LangIdConfig())
    assert lang_de == "de"
    # a prefix-only classifier (the first chunk) would have said German
    (first,), _ = identify([chunks(mixed, 2000, 16)[0]], LangIdConfig())
    assert first == "de"


def test_chunks_cover_long_text_and_cap() -> None:
    text = handbook()["en-US", "sect.apt-frontends.html"]
    pieces = chunks(text, 500, 1000)
    assert all(len(p) <= 600 for p in pieces) and len(pieces) >= len(text) // 600
    assert all("\n" not in p for p in pieces)
    assert sum(map(len, pieces)) >= 0.95 * len(" ".join(text.split()))
    capped = chunks(text, 500, 4)
    assert len(capped) == 4 and capped[0] == pieces[0] and capped[-1] == pieces[-1]
    assert chunks("1234 5678 ---", 2000, 4) == []  # nothing to classify


def test_rules_code_skip_and_counters() -> None:
    pages = handbook()
    code = sample_docs(("code",))
    items = [(f"{loc}/{p}", pages[loc, p], "web") for loc, p in sorted(pages)]
    items += [(s, t, "code") for s, t in zip(code["source"].to_pylist(),
                                              code["text"].to_pylist(), strict=True)]  # fmt: skip
    items += [("empty", "", "web"), ("digits", "0 1 2 3 4 5 -- ##", "web")]
    table = _docs(items)
    cfg = LangIdConfig(allowed_langs=["en", "de"], min_score=0.6)
    result = LANGID.run(table, cfg)
    s = result.stats
    assert s.docs_in == len(items) == s.kept + s.removed_total + s.quarantined_total
    scored = LANGID.score(table, cfg)
    langs = np.asarray(scored["lang"].to_pylist(), dtype=object)
    scores = scored["lang_score"].to_pylist()
    is_code = np.asarray([d == "code" for d in scored["domain"].to_pylist()])
    assert (langs[is_code] == "code").all() and all(
        scores[i] is None for i in np.flatnonzero(is_code)
    )
    measured = ~is_code
    low = measured & np.asarray([(x or 0.0) < 0.6 for x in scores])
    not_allowed = measured & ~low & ~np.isin(langs, ["en", "de"])
    assert s.removed["lang_low_score"] == low.sum() >= 2  # the empty and the digits doc at least
    assert s.removed["lang_not_allowed"] == not_allowed.sum() > 10
    kept_langs = set(result.kept["lang"].to_pylist())
    assert kept_langs <= {"en", "de", "code"} and {"en", "de", "code"} <= kept_langs
    null_label = LANGID.score(table, LangIdConfig(skip_label=None))
    assert null_label.filter(pa.array(is_code))["lang"].null_count == int(is_code.sum())


def test_model_comes_from_the_wheel() -> None:
    path = Path(default_model_path())
    assert path.name == "lid.176.ftz" and path.parent.name == "resources"
    assert 800_000 < path.stat().st_size < 1_100_000
    with pytest.raises(ValueError):
        LangIdConfig(min_scor=0.3)


def test_a_long_consistent_document_passes() -> None:
    """LLVM's tblgen manual: every chunk says English, each one unsure (technical text, mean
    probability < 0.5); the evidence adds up over the chunks, so it is kept. One such chunk
    alone still scores what fastText says."""
    (doc,) = [
        r
        for r in sample_docs(("rst",)).to_pylist()
        if r["source"].endswith("13-doc/html/_sources/CommandGuide/tblgen.rst.txt")
    ]
    cfg = LangIdConfig()
    pieces = chunks(doc["text"], cfg.chunk_chars, cfg.max_chunks)
    labels, probs = load_model(None).predict(pieces, k=1)
    assert len(pieces) >= 20 and {lab[0] for lab in labels} == {"__label__en"}
    assert float(np.mean([p[0] for p in probs])) < 0.5
    (lang,), (score,) = identify([doc["text"]], cfg)
    assert lang == "en" and score >= cfg.min_score
    assert LANGID.run(_docs([("tblgen", doc["text"], "rst")]), cfg).stats.kept == 1
    one = max(range(len(pieces)), key=lambda i: -probs[i][0])  # the least sure chunk
    (_,), (alone,) = identify([pieces[one]], cfg)
    assert abs(alone - probs[one][0]) < 1e-3


def _identify_one_pair_at_a_time(
    texts: list[str], cfg: LangIdConfig
) -> tuple[list[str | None], np.ndarray]:
    """The module doc's vote and evidence, summed one (chunk, label) pair at a time in Python:
    the reference the stage's arrays must match bit for bit."""
    from collections import defaultdict

    owner = [i for i, t in enumerate(texts) for _ in chunks(t, cfg.chunk_chars, cfg.max_chunks)]
    pieces = [p for t in texts for p in chunks(t, cfg.chunk_chars, cfg.max_chunks)]
    langs: list[str | None] = [None] * len(texts)
    scores = np.zeros(len(texts), dtype=np.float32)
    if not pieces:
        return langs, scores
    labels, probs = load_model(cfg.model_path).predict(pieces, k=cfg.top_k)
    votes: list[dict[str, float]] = [defaultdict(float) for _ in texts]
    log_miss: list[dict[str, float]] = [defaultdict(float) for _ in texts]
    chars = np.zeros(len(texts))
    for i, piece in zip(owner, pieces, strict=True):
        chars[i] += len(piece)
    for i, piece, labs, ps in zip(owner, pieces, labels, probs, strict=True):
        for lab, p in zip(labs, ps, strict=True):
            votes[i][lab.removeprefix("__label__")] += len(piece) * float(p)
        unit = min(cfg.chunk_chars, chars[i])
        top_p = min(float(ps[0]), 1.0 - 1e-6)
        log_miss[i][labs[0].removeprefix("__label__")] += (len(piece) / unit) * np.log1p(-top_p)
    for i, vote in enumerate(votes):
        if vote:
            langs[i] = max(vote.items(), key=lambda kv: kv[1])[0]
            lm = log_miss[i]
            scores[i] = -np.expm1(lm[langs[i]]) if langs[i] in lm else 0.0
    return langs, scores


@pytest.mark.parametrize(
    "cfg",
    [LangIdConfig(), LangIdConfig(chunk_chars=100, top_k=5), LangIdConfig(max_chunks=2, top_k=1)],
)
def test_vote_over_arrays_is_the_pair_by_pair_sum(cfg: LangIdConfig) -> None:
    """identify's vote and evidence over numpy arrays give exactly (same languages, same
    float32 bits) what adding one chunk's labels at a time gives, on the handbook's 26
    locales, the sample's documents, and texts with nothing or little to classify (a winner
    that is no chunk's top label scores 0)."""
    texts = list(handbook().values()) + sample_docs()["text"].to_pylist()[:300]
    texts += ["", "1234 5678", "a", "Ok. " * 400, "über " * 30 + "the " * 31]
    got, want = identify(texts, cfg), _identify_one_pair_at_a_time(texts, cfg)
    assert got[0] == want[0]
    assert got[1].tobytes() == want[1].tobytes()
    assert len(set(got[0]) - {None}) > 10 and (got[1] == 0).any()
