"""Dedup and decontamination on real documents: llvm-{13..16} rst sources (the same manual in 4
versions), Debian reference chapters (ja/zh-cn/en), checked against exact Jaccard ground truth."""

from __future__ import annotations

import html
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.dedup.clusters import UnionFind, clusters
from curate.dedup.decontam import DECONTAM, DecontamConfig, contamination_counts
from curate.dedup.exact import EXACT_DEDUP, ExactDedupConfig
from curate.dedup.minhash import (
    NEAR_DEDUP,
    NearDedupConfig,
    band_keys,
    exact_jaccard,
    lsh_pairs_from_keys,
    minhash_signatures,
    signature_matrix,
)
from curate.dedup.text import split_words, text_shingles, words
from curate.schema import doc_id, docs_table
from curate.stage import GlobalStage, StageStats
from curate.storage import parquet_bytes, read_parquet, write_bytes_atomic

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
LLVM = SAMPLE / "rst"


def _doc(source: str, text: str, **extra) -> dict:
    return dict(
        id=doc_id(source), text=text, source=source, offset=0, domain="code", format="rst", **extra
    )


def llvm_docs() -> list[dict]:
    """The 80 llvm rst pages (20 pages x 4 versions), sorted by version then path."""
    return [
        _doc(str(p.relative_to(LLVM)), p.read_text(encoding="utf-8"))
        for p in sorted(LLVM.rglob("*.rst.txt"))
    ]


def page_name(source: str) -> str:
    return source.split("/_sources/", 1)[1]


def html_text(path: Path) -> str:
    raw = path.read_text(encoding="utf-8")
    raw = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", raw)
    return html.unescape(re.sub(r"<[^>]+>", " ", raw))


def run_global(
    stage: GlobalStage, parts: list[pa.Table], cfg, tmp_path: Path
) -> tuple[pa.Table, list]:
    """Map every part to a parquet file, reduce once, apply to every part."""
    urls = []
    for i, part in enumerate(parts):
        url = str(tmp_path / f"{stage.name}-map-{i:05d}.parquet")
        write_bytes_atomic(parquet_bytes(stage.map(part, cfg)), url)
        urls.append(url)
    state = stage.reduce(urls, cfg)
    return state, [stage.run(part, state, cfg) for part in parts]


def table_of(rows: list[dict]) -> pa.Table:
    """Documents plus a ``quality_score`` column when the rows carry one."""
    table = docs_table(rows)
    if any("quality_score" in r for r in rows):
        scores = [r.get("quality_score") for r in rows]
        table = table.append_column("quality_score", pa.array(scores, pa.float32()))
    return table


def split_parts(rows: list[dict], n_parts: int) -> list[pa.Table]:
    size = -(-len(rows) // n_parts)
    return [table_of(rows[i : i + size]) for i in range(0, len(rows), size)]


def word_ngrams(text: str, n: int) -> set[str]:
    """Ground truth: word n-grams as strings (a text with < n words is one n-gram)."""
    w = words(text)
    if 0 < len(w) < n:
        return {" ".join(w)}
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


# --- union-find ----------------------------------------------------------------------------


def test_union_find_roots_are_smallest_and_order_free() -> None:
    rng = np.random.default_rng(0)
    n = 500
    pairs = rng.integers(0, n, size=(300, 2))
    labels = clusters(n, pairs)
    # naive components by repeated relaxation
    naive = np.arange(n)
    for _ in range(n):
        before = naive.copy()
        for a, b in pairs:
            m = min(naive[a], naive[b])
            naive[naive == naive[a]] = m
            naive[naive == naive[b]] = m
        if np.array_equal(before, naive):
            break
    assert np.array_equal(labels, naive)
    assert np.array_equal(clusters(n, pairs[::-1]), labels)
    assert np.array_equal(clusters(n, pairs[:, ::-1]), labels)
    assert np.all(labels <= np.arange(n))
    uf = UnionFind(4)
    assert uf.union(3, 2) == 2 and uf.union(2, 1) == 1 and uf.find(3) == 1
    assert clusters(3, np.zeros((0, 2), np.int64)).tolist() == [0, 1, 2]


# --- words and shingles --------------------------------------------------------------------


def test_words_cjk_and_batch_independence() -> None:
    assert words("Hello, World! foo_bar x=42; déjà-vu") == [
        "hello",
        "world",
        "foo_bar",
        "x",
        "42",
        "déjà",
        "vu",
    ]
    assert words("日本語 text") == ["日", "本", "語", "text"]
    docs = [d["text"] for d in llvm_docs()[:6]] + ["", "one two", "a b c d e f g"]
    batch = text_shingles(pa.array(docs), 5)
    for i, text in enumerate(docs):
        alone = text_shingles(pa.array([text]), 5)
        assert np.array_equal(batch.hashes[batch.offsets[i] : batch.offsets[i + 1]], alone.hashes)
        assert len(alone.hashes) == len(word_ngrams(text, 5))  # one hash per distinct n-gram
    sw = split_words(pa.array(docs))
    assert sw[7].as_py() == ["one", "two"] and sw[6].as_py() == []


# --- MinHash compatibility with datasketch -------------------------------------------------


def test_signatures_are_datasketch_minhashes() -> None:
    from datasketch import LeanMinHash, MinHash

    texts = [d["text"] for d in llvm_docs()[:8]]
    sh = text_shingles(pa.array(texts), 5)
    sig = minhash_signatures(sh.hashes, sh.offsets, 128, seed=7, chunk_rows=1000)
    for i in range(len(texts)):
        m = MinHash(num_perm=128, seed=7, scheme="affine32", hashfunc=lambda x: x)
        for h in sh.hashes[sh.offsets[i] : sh.offsets[i + 1]].tolist():
            m.update(h & 0xFFFFFFFF)
        assert np.array_equal(m.hashvalues, sig[i])
    lean = [LeanMinHash(seed=7, hashvalues=s, scheme="affine32") for s in sig]
    # estimate vs exact Jaccard of the same shingle sets
    sets = [sh.hashes[sh.offsets[i] : sh.offsets[i + 1]] for i in range(len(texts))]
    for i, j in itertools.combinations(range(len(texts)), 2):
        assert abs(lean[i].jaccard(lean[j]) - exact_jaccard(sets[i], sets[j])) < 0.2


def test_lsh_candidates_equal_datasketch_minhashlsh(tmp_path: Path) -> None:
    from datasketch import LeanMinHash, MinHashLSH

    cfg = NearDedupConfig(verify=False)
    table = NEAR_DEDUP.map(docs_table(llvm_docs()), cfg)
    sig = signature_matrix(table["signature"], cfg.num_perm)
    bands, rows = cfg.lsh_params()
    pairs = lsh_pairs_from_keys(band_keys(sig, bands, rows), np.arange(len(sig)))
    ours = {tuple(p) for p in pairs.tolist()}
    lsh = MinHashLSH(num_perm=cfg.num_perm, params=(bands, rows))
    for i, s in enumerate(sig):
        lsh.insert(i, LeanMinHash(seed=cfg.seed, hashvalues=s, scheme="affine32"))
    theirs = set()
    for i, s in enumerate(sig):
        for j in lsh.query(LeanMinHash(seed=cfg.seed, hashvalues=s, scheme="affine32")):
            if j != i:
                theirs.add((min(i, j), max(i, j)))
    assert ours == theirs and len(ours) > 50


# --- exact dedup ---------------------------------------------------------------------------


def test_exact_dedup_normalisation_priority_conservation(tmp_path: Path) -> None:
    base = llvm_docs()[:20]  # llvm-13: 20 distinct pages
    rows = [dict(r, quality_score=0.5) for r in base]
    # copies that differ only in case and whitespace, in a later part
    copies = [
        _doc(f"copy/{i}", "  " + re.sub(r"\s+", "\n\t", r["text"].upper()) + " ", quality_score=0.9)
        for i, r in enumerate(base[:7])
    ]
    punct = _doc("punct/0", re.sub(r"[.,:;]", " ", base[8]["text"]), quality_score=0.1)
    # NFKC: full-width letters and ligatures fold to ASCII
    fullwidth = _doc("nfkc/0", base[9]["text"].replace("a", "\uff41").replace("fi", "\ufb01"))
    rows += copies + [punct, fullwidth, _doc("empty/0", ""), _doc("empty/1", "   ")]
    parts = split_parts(rows, 3)

    state, results = run_global(EXACT_DEDUP, parts, ExactDedupConfig(), tmp_path)
    stats = StageStats(stage="exact_dedup")
    for res in results:
        stats = stats.merge(res.stats)
    stats.check()
    assert stats.docs_in == len(rows)
    assert stats.removed == {"exact_duplicate": 8}  # punctuation differs; empty docs are kept
    removed = pa.concat_tables([r.removed for r in results])
    assert sorted(removed["source"].to_pylist()) == sorted(
        [c["source"] for c in copies] + ["nfkc/0"]
    )
    first_ids = {r["id"] for r in base[:7]}
    assert set(removed["duplicate_of"].to_pylist()) == first_ids | {base[9]["id"]}
    assert all(r.kept["duplicate_of"].null_count == r.kept.num_rows for r in results)

    state, results = run_global(
        EXACT_DEDUP, parts, ExactDedupConfig(strip_punctuation=True), tmp_path
    )
    assert sum(r.stats.removed.get("exact_duplicate", 0) for r in results) == 9
    state, results = run_global(EXACT_DEDUP, parts, ExactDedupConfig(nfkc=False), tmp_path)
    assert sum(r.stats.removed.get("exact_duplicate", 0) for r in results) == 7

    # prefer the higher quality_score: the copies survive, the originals go
    cfg = ExactDedupConfig(priority="quality_score")
    state, results = run_global(EXACT_DEDUP, parts, cfg, tmp_path)
    removed = pa.concat_tables([r.removed for r in results]).filter(
        pa.compute.field("source") != "nfkc/0"
    )
    assert set(removed["id"].to_pylist()) == first_ids
    assert set(removed["duplicate_of"].to_pylist()) == {c["id"] for c in copies}


# --- near dedup: ground truth on the llvm manuals ------------------------------------------


def _cluster_pairs(results) -> set[tuple[str, str]]:
    table = pa.concat_tables(
        [pa.concat_tables([r.kept.select(["id", "minhash_cluster"]) for r in results])]
        + [pa.concat_tables([r.removed.select(["id", "minhash_cluster"]) for r in results])]
    )
    by_cluster: dict[int, list[str]] = {}
    for i, c in zip(table["id"].to_pylist(), table["minhash_cluster"].to_pylist(), strict=True):
        if c is not None:
            by_cluster.setdefault(c, []).append(i)
    return {
        tuple(sorted(p))
        for members in by_cluster.values()
        for p in itertools.combinations(members, 2)
    }


@pytest.mark.parametrize("verify", [True, False])
def test_near_dedup_llvm_versions_recall_precision(tmp_path: Path, verify: bool) -> None:
    rows = llvm_docs()
    grams = {r["id"]: word_ngrams(r["text"], 5) for r in rows}
    truth = {
        tuple(sorted((a["id"], b["id"]))): jaccard(grams[a["id"]], grams[b["id"]])
        for a, b in itertools.combinations(rows, 2)
    }
    parts = split_parts(rows, 4)
    cfg = NearDedupConfig(verify=verify)
    state, results = run_global(NEAR_DEDUP, parts, cfg, tmp_path)
    predicted = _cluster_pairs(results)

    print(
        f"\nllvm 4 versions x 20 pages, {len(truth)} pairs, verify={verify}, LSH {cfg.lsh_params()}"
    )
    for t in (0.5, 0.7, 0.8, 0.9):
        positives = {p for p, j in truth.items() if j >= t}
        recall = len(positives & predicted) / max(len(positives), 1)
        precision = len(positives & predicted) / max(len(predicted), 1)
        print(
            f"  J>={t}: {len(positives):4d} true pairs  recall {recall:.3f}  precision {precision:.3f}"
        )
    positives = {p for p, j in truth.items() if j >= 0.8}
    same_page = {
        tuple(sorted((a["id"], b["id"])))
        for a, b in itertools.combinations(rows, 2)
        if page_name(a["source"]) == page_name(b["source"])
    }
    assert len(positives) >= 40 and positives <= same_page  # the ground truth is sane
    recall = len(positives & predicted) / len(positives)
    precision = len(positives & predicted) / len(predicted)
    assert recall >= 0.97
    if verify:
        assert precision >= 0.95

    # conservation and the state's shape
    stats = [r.stats for r in results]
    assert sum(s.docs_in for s in stats) == len(rows)
    assert sum(s.kept + s.removed_total + s.quarantined_total for s in stats) == len(rows)
    kept_ids = {i for r in results for i in r.kept["id"].to_pylist()}
    removed = pa.concat_tables([r.removed for r in results])
    assert set(removed["reason"].to_pylist()) == {"near_duplicate"}
    assert set(removed["duplicate_of"].to_pylist()) <= kept_ids  # every removed copy's keeper stays
    assert state.schema.names == ["id", "minhash_cluster", "duplicate_of"]


def test_near_dedup_is_deterministic_and_part_independent(tmp_path: Path) -> None:
    rows = llvm_docs()
    cfg = NearDedupConfig()
    a, _ = run_global(NEAR_DEDUP, split_parts(rows, 4), cfg, tmp_path / "a")
    b, _ = run_global(NEAR_DEDUP, split_parts(rows, 4), cfg, tmp_path / "b")
    assert a.equals(b)
    m1 = (tmp_path / "a" / "near_dedup-map-00001.parquet").read_bytes()
    m2 = (tmp_path / "b" / "near_dedup-map-00001.parquet").read_bytes()
    assert m1 == m2
    # a different split into parts gives the same clusters (ids and keepers)
    c, _ = run_global(NEAR_DEDUP, split_parts(rows, 3), cfg, tmp_path / "c")
    assert a.sort_by("id").equals(c.sort_by("id"))
    mapped = read_parquet(str(tmp_path / "a" / "near_dedup-map-00000.parquet"))
    assert mapped.schema.field("signature").type == pa.list_(pa.uint32(), 128)


def test_near_dedup_cjk_priority_and_empty(tmp_path: Path) -> None:
    ref = SAMPLE / "html"
    ja = html_text(next((ref / "debian-reference-ja").rglob("*.html")))
    zh = html_text(next((ref / "debian-reference-zh-cn").rglob("*.html")))
    en = html_text(next((ref / "debian-reference-en").rglob("*.html")))
    # a Japanese copy with every 40th line dropped: near-duplicate only at the character level
    lines = ja.splitlines()
    ja_edit = "\n".join(line for i, line in enumerate(lines) if i % 40 != 7)
    grams_ja, grams_edit = word_ngrams(ja, 5), word_ngrams(ja_edit, 5)
    assert jaccard(grams_ja, grams_edit) >= 0.85
    assert max(len(w) for w in words(ja) if not w.isascii()) == 1  # Japanese split per character
    rows = [
        _doc("ja", ja, quality_score=0.2),
        _doc("zh", zh, quality_score=0.5),
        _doc("en", en, quality_score=0.5),
        _doc("ja-edit", ja_edit, quality_score=0.9),
        _doc("empty-a", ""),
        _doc("empty-b", "!!!"),
    ]
    parts = split_parts(rows, 2)
    state, results = run_global(NEAR_DEDUP, parts, NearDedupConfig(), tmp_path)
    removed = pa.concat_tables([r.removed for r in results])
    assert removed["source"].to_pylist() == ["ja-edit"]  # later in source order
    state, results = run_global(
        NEAR_DEDUP, parts, NearDedupConfig(priority="quality_score"), tmp_path
    )
    removed = pa.concat_tables([r.removed for r in results])
    assert removed["source"].to_pylist() == ["ja"]  # the better-scored copy is kept
    assert removed["duplicate_of"].to_pylist() == [doc_id("ja-edit")]


# --- decontamination -----------------------------------------------------------------------


def test_decontam_real_eval_paragraph(tmp_path: Path) -> None:
    rows = llvm_docs()
    faq = next(r for r in rows if r["source"].endswith("llvm-16-doc/html/_sources/FAQ.rst.txt"))
    paragraph = max(faq["text"].split("\n\n"), key=len)  # the FAQ's longest paragraph
    assert len(words(paragraph)) >= 40
    eval_txt = tmp_path / "eval_faq.txt"
    eval_txt.write_text(paragraph, encoding="utf-8")
    # a second eval file in jsonl: one question taken from CodingStandards, plus a miss
    cs = next(
        r for r in rows if r["source"].endswith("llvm-13-doc/html/_sources/CodingStandards.rst.txt")
    )
    sentence = " ".join(cs["text"].split()[400:430])
    eval_jsonl = tmp_path / "eval_cs.jsonl"
    eval_jsonl.write_text(
        json.dumps({"text": sentence}) + "\n" + json.dumps({"text": "a b c"}) + "\n",
        encoding="utf-8",
    )
    prose = [_doc("en", html_text(next((SAMPLE / "html/debian-reference-en").rglob("*.html"))))]
    table = docs_table(rows + prose)
    cfg = DecontamConfig(eval_files=[str(eval_txt), str(eval_jsonl)])
    result = DECONTAM.run(table, cfg)

    # ground truth: documents sharing a word 13-gram (as strings) with each eval text
    truth_faq = {
        r["id"] for r in rows + prose if word_ngrams(r["text"], 13) & word_ngrams(paragraph, 13)
    }
    truth_cs = {
        r["id"] for r in rows + prose if word_ngrams(r["text"], 13) & word_ngrams(sentence, 13)
    }
    assert faq["id"] in truth_faq and cs["id"] in truth_cs
    removed = result.removed
    assert set(removed["id"].to_pylist()) == truth_faq | truth_cs
    assert set(removed["reason"].to_pylist()) == {"eval_contamination"}
    assert result.stats.kept + result.stats.removed_total == table.num_rows
    counts = contamination_counts(removed, cfg)
    assert counts == {str(eval_txt): len(truth_faq), str(eval_jsonl): len(truth_cs)}
    print(f"\ndecontam: {counts}")

    flagged = DECONTAM.run(table, DecontamConfig(eval_files=[str(eval_txt)], action="flag"))
    assert flagged.stats.removed_total == 0
    hits = flagged.kept.filter(pa.compute.greater(flagged.kept["contamination_ngrams"], 0))
    assert set(hits["id"].to_pylist()) == truth_faq


def test_big_buckets_empty_parts_and_empty_state(tmp_path: Path) -> None:
    page = llvm_docs()[3]["text"]
    rows = [_doc(f"copy/{i}", page + f"\n\nrevision {i}") for i in range(12)]
    parts = [table_of(rows[:5]), docs_table([]), table_of(rows[5:])]
    for cfg in (NearDedupConfig(max_bucket=3), NearDedupConfig(max_bucket=3, verify=False)):
        state, results = run_global(NEAR_DEDUP, parts, cfg, tmp_path)
        assert [r.stats.docs_in for r in results] == [5, 0, 7]
        removed = pa.concat_tables([r.removed for r in results])
        assert removed.num_rows == 11
        assert set(removed["duplicate_of"].to_pylist()) == {rows[0]["id"]}
        assert set(state["minhash_cluster"].to_pylist()) == {0}
    # nothing similar: an empty state, every document kept with null columns
    lone = [table_of(llvm_docs()[:3])]
    state, results = run_global(NEAR_DEDUP, lone, NearDedupConfig(), tmp_path)
    assert state.num_rows == 0 and results[0].stats.kept == 3
    assert results[0].kept["minhash_cluster"].null_count == 3
    state, results = run_global(EXACT_DEDUP, lone, ExactDedupConfig(), tmp_path)
    assert state.num_rows == 0 and results[0].stats.kept == 3
    assert NEAR_DEDUP.reduce([], NearDedupConfig()).num_rows == 0
    assert EXACT_DEDUP.reduce([], ExactDedupConfig()).num_rows == 0
