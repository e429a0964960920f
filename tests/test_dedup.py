"""Dedup and decontamination on real documents: llvm-{13..16} rst sources (the same manual in 4
versions), Debian reference chapters (ja/zh-cn/en), checked against exact Jaccard ground truth."""

from __future__ import annotations

import html
import itertools
import json
import os
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
from tests.imports import modules_imported

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


def test_lsh_parameters_equal_datasketch_without_importing_it() -> None:
    """Permutations, (bands, rows) of MinHashLSH and of the LSH Ensemble and the size partitions
    are datasketch's; a near-dedup run with containment never imports datasketch or scipy."""
    from datasketch import MinHash
    from datasketch.lsh import _optimal_param as lsh_param
    from datasketch.lshensemble import _optimal_param as ensemble_param
    from datasketch.lshensemble_partition import optimal_partitions as their_partitions

    from curate.dedup import lsh_params

    for num_perm, seed in itertools.product((1, 16, 128, 256), (0, 7, 12345)):
        a, b = lsh_params.permutations(num_perm, seed)
        theirs = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        assert a.dtype == b.dtype == np.uint32
        assert np.array_equal(a, theirs[0]) and np.array_equal(b, theirs[1])
    for num_perm, threshold, fn in itertools.product(
        (16, 128), np.round(np.arange(0.1, 1.0, 0.1), 1).tolist(), (0.5, 0.95)
    ):
        ours = lsh_params.optimal_params(threshold, num_perm, fn)
        assert ours == lsh_param(threshold, num_perm, 1 - fn, fn), (num_perm, threshold, fn)
    ties = 0
    for num_perm, m, threshold, fn, xq in itertools.product(
        (64, 128), (4, 8), (0.5, 0.8, 0.9), (0.5, 0.2), np.exp(np.linspace(-5, 5, 10)).tolist()
    ):
        ours = lsh_params.ensemble_optimal_param(threshold, num_perm, m, xq, fn)
        theirs = ensemble_param(threshold, num_perm, m, xq, 1 - fn, fn)
        if ours != theirs:  # only where both candidates' weighted errors tie (module doc)
            assert fn != 0.5 and xq > 1, (num_perm, m, threshold, fn, xq)
            ties += 1
    assert ties <= 2
    sizes = np.unique(np.array([len(d["text"].split()) for d in llvm_docs()]))
    counts = np.arange(1, len(sizes) + 1)
    assert lsh_params.optimal_partitions(sizes, counts, 8) == their_partitions(sizes, counts, 8)
    script = (
        "from tests.test_dedup import llvm_docs, _manual; "
        "from curate.dedup.minhash import NEAR_DEDUP, NearDedupConfig; "
        "from curate.schema import docs_table; "
        "rows = llvm_docs()[:40]; rows.append(_manual(rows[:20], 'm.txt')); "
        "import tempfile; from curate.dedup import minhash, containment; "
        "cfg = NearDedupConfig(); m = NEAR_DEDUP.map(docs_table(rows), cfg); "
        "minhash.permutations(cfg.num_perm, cfg.seed); cfg.lsh_params(); "
        "containment.ensemble_params(0.8, 128, 8, 0.5); "
        "containment.size_partitions(m['n_shingles'].to_numpy(), 16)"
    )
    assert modules_imported(script, ["datasketch", "scipy"]) == []


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

    # input order decides (the default policy would prefer the copies' quality_score)
    state, results = run_global(EXACT_DEDUP, parts, ExactDedupConfig(priority=["order"]), tmp_path)
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

    # prefer the higher quality_score (the default policy's first key, or named): the copies
    # survive, the originals go
    for cfg in (ExactDedupConfig(priority="quality_score"), ExactDedupConfig()):
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
    assert set(removed["reason"].to_pylist()) == {"near_duplicate", "contained_in"}
    near = removed.filter(pa.compute.field("reason") == "near_duplicate")
    contained = removed.filter(pa.compute.field("reason") == "contained_in")
    assert near["contained_in"].null_count == near.num_rows
    assert contained["duplicate_of"].null_count == contained.num_rows
    # every removed copy's keeper stays, or lies in a container that stays
    assert set(contained["contained_in"].to_pylist()) <= kept_ids
    assert set(near["duplicate_of"].to_pylist()) <= kept_ids | set(contained["id"].to_pylist())
    assert min(contained["containment"].to_pylist()) >= 0.8
    assert state.schema.names == [
        "id",
        "minhash_cluster",
        "duplicate_of",
        "contained_in",
        "containment",
    ]


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
    cfg = NearDedupConfig(priority=["order"])
    state, results = run_global(NEAR_DEDUP, parts, cfg, tmp_path)
    removed = pa.concat_tables([r.removed for r in results])
    assert removed["source"].to_pylist() == ["ja-edit"]  # later in source order
    for cfg in (NearDedupConfig(priority="quality_score"), NearDedupConfig()):
        state, results = run_global(NEAR_DEDUP, parts, cfg, tmp_path)
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


def test_decontam_scores_the_same_in_batches_of_any_size(tmp_path: Path, monkeypatch) -> None:
    """decontam hashes a part a few MB of text at a time (a 32 MB part at once peaked at
    2 GB): batches of one document or of the whole part give the same columns."""
    import curate.dedup.decontam as decontam

    rows = llvm_docs()
    paragraph = max(rows[5]["text"].split("\n\n"), key=len)
    eval_txt = tmp_path / "eval.txt"
    eval_txt.write_text(paragraph, encoding="utf-8")
    table = docs_table(rows)
    cfg = DecontamConfig(eval_files=[str(eval_txt)])
    scored = {}
    for budget in (1, 1 << 12, 1 << 40):
        monkeypatch.setattr(decontam, "BATCH_BYTES", budget)
        scored[budget] = decontam.score(table, cfg)
    assert scored[1].equals(scored[1 << 40]) and scored[1 << 12].equals(scored[1 << 40])
    assert scored[1].filter(pa.compute.greater(scored[1]["contamination_ngrams"], 0)).num_rows


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


# --- which copy survives: the keep policy ---------------------------------------------------


def test_keep_policy_keys_and_renditions() -> None:
    from pydantic import ValidationError

    from curate.dedup.common import KeepKey, format_rank, rendition

    assert NearDedupConfig().keep_keys() == [
        KeepKey("quality_score", True),
        KeepKey("format", False),
        KeepKey("length", True),
        KeepKey("order", False),
    ]
    # a bare column name: that column first, then the default tail
    assert [k.name for k in ExactDedupConfig(priority="toxicity").keep_keys()] == [
        "toxicity",
        "quality_score",
        "format",
        "length",
        "order",
    ]
    assert ExactDedupConfig(priority=["length asc", "id"]).keep_keys() == [
        KeepKey("length", False),
        KeepKey("id", False),
        KeepKey("order", False),
    ]
    for bad in (["format desc"], ["a b c"], ["score sideways"]):
        with pytest.raises(ValidationError):
            NearDedupConfig(priority=bad)
    assert rendition("doc/debian-reference.en.txt.gz", "text") == "txt"
    assert rendition("https://x.org/a/b.HTML?x=1", "warc") == "html"
    assert rendition("gen", "pdf") == "pdf" and rendition("gen", None) == ""
    order = NearDedupConfig().format_order
    ranks = format_rank(
        ["a.html", "a.txt", "a.pdf", "a.py", "a"], [None, None, None, "code", "rst"], order
    )
    assert ranks[0] < ranks[1] < ranks[3] < ranks[2] and ranks[4] < ranks[1]


def _reflow(pdf_text: str) -> str:
    """The clean txt rendition of a PDF's text: lines joined into paragraphs, the table of
    contents' dot leaders and lone page numbers dropped."""
    lines = [
        line
        for line in pdf_text.splitlines()
        if not re.fullmatch(r"\s*\d*\s*", line) and ". . ." not in line
    ]
    return re.sub(r"(?<=[a-z,])\n(?=[a-z])", " ", "\n".join(lines))


def test_same_text_as_pdf_and_txt_keeps_the_txt(tmp_path: Path) -> None:
    from curate.readers.pdf import extract_pdf

    pdf = SAMPLE / "pdf/texlive-fonts-recommended-doc/usr/share/doc/texlive-doc/latex/euro/euro.pdf"
    pdf_text = extract_pdf(pdf.read_bytes()).text
    txt_text = _reflow(pdf_text)
    assert txt_text != pdf_text and len(txt_text) > 20_000
    other = llvm_docs()[:3]
    # no quality score (null, as for non-English documents); the PDF comes first in input order
    parts = [
        table_of(other + [dict(_doc("euro/euro.pdf", pdf_text), format="pdf")]),
        table_of([dict(_doc("euro/euro.txt", txt_text), format="text")]),
    ]
    state, results = run_global(NEAR_DEDUP, parts, NearDedupConfig(), tmp_path)
    removed = pa.concat_tables([r.removed for r in results])
    assert removed["source"].to_pylist() == ["euro/euro.pdf"]
    survivor = removed["duplicate_of"][0].as_py() or removed["contained_in"][0].as_py()
    assert survivor == doc_id("euro/euro.txt")
    # input order would have kept the PDF
    state, results = run_global(NEAR_DEDUP, parts, NearDedupConfig(priority=["order"]), tmp_path)
    removed = pa.concat_tables([r.removed for r in results])
    assert removed["source"].to_pylist() == ["euro/euro.txt"]
    # the same bytes as pdf and txt: exact dedup keeps the txt too
    parts = [
        table_of([dict(_doc("same/euro.pdf", pdf_text), format="pdf")]),
        table_of([dict(_doc("same/euro.txt", pdf_text), format="text")]),
    ]
    state, results = run_global(EXACT_DEDUP, parts, ExactDedupConfig(), tmp_path)
    removed = pa.concat_tables([r.removed for r in results])
    assert removed["source"].to_pylist() == ["same/euro.pdf"]
    assert removed["duplicate_of"].to_pylist() == [doc_id("same/euro.txt")]


# --- containment ----------------------------------------------------------------------------


def _manual(pages: list[dict], source: str) -> dict:
    """The single-page rendition of a manual: a title, then every page in order."""
    body = "\n\n".join(p["text"] for p in pages)
    return _doc(source, "LLVM 16 documentation (all pages)\n\n" + body)


def test_ensemble_candidates_equal_datasketch_lsh_ensemble() -> None:
    from datasketch import LeanMinHash, MinHashLSHEnsemble

    from curate.dedup.containment import ensemble_candidates

    rows = llvm_docs()
    rows.append(_manual([r for r in rows if "llvm-16-doc" in r["source"]], "llvm-16/manual.txt"))
    cfg = NearDedupConfig()
    mapped = NEAR_DEDUP.map(docs_table(rows), cfg)
    sig = signature_matrix(mapped["signature"], cfg.num_perm)
    sizes = mapped["n_shingles"].to_numpy().astype(np.int64)
    queries = np.arange(len(rows))
    ours = {tuple(p) for p in ensemble_candidates(sig, sizes, queries, 0.8).tolist()}
    index = MinHashLSHEnsemble(threshold=0.8, num_perm=cfg.num_perm, num_part=16, m=8)
    lean = [LeanMinHash(seed=cfg.seed, hashvalues=s, scheme="affine32") for s in sig]
    index.index([(i, lean[i], int(sizes[i])) for i in range(len(rows))])
    theirs = {
        (i, k) for i in range(len(rows)) for k in index.query(lean[i], int(sizes[i])) if k != i
    }
    assert ours == theirs and len(ours) > 100


def test_chapters_beside_their_single_page_manual_are_removed(tmp_path: Path) -> None:
    rows = llvm_docs()
    chapters = [r for r in rows if "llvm-16-doc" in r["source"]]
    manual = _manual(chapters, "llvm-16/manual.txt")
    # the manual last in input order, chapters spread over parts: order must not matter
    parts = split_parts(chapters + [manual], 3)
    state, results = run_global(NEAR_DEDUP, parts, NearDedupConfig(), tmp_path)
    removed = pa.concat_tables([r.removed for r in results])
    kept = pa.concat_tables([r.kept for r in results])
    assert kept["id"].to_pylist() == [manual["id"]]
    assert set(removed["reason"].to_pylist()) == {"contained_in"}
    assert sorted(removed["id"].to_pylist()) == sorted(r["id"] for r in chapters)
    assert set(removed["contained_in"].to_pylist()) == {manual["id"]}
    assert min(removed["containment"].to_pylist()) > 0.95
    # a chapter alone with another version's manual: contained where the text really is
    state, results = run_global(NEAR_DEDUP, split_parts(chapters, 2), NearDedupConfig(), tmp_path)
    assert sum(r.stats.removed_total for r in results) == 0  # pages do not contain each other
    off = NearDedupConfig(containment=None)
    state, results = run_global(NEAR_DEDUP, parts, off, tmp_path)
    assert sum(r.stats.removed_total for r in results) == 0
    assert state.num_rows == 0


def word_containment(a: set, b: set) -> float:
    return len(a & b) / len(a) if a else 0.0


def test_containment_agrees_with_exact_ground_truth(tmp_path: Path) -> None:
    """The 80 llvm pages (4 versions: later pages often hold most of an earlier one) plus a
    single-page manual: every pair checked by exact containment of word 5-gram strings."""
    from curate.dedup.containment import choose_containers

    rows = llvm_docs()
    rows.append(_manual([r for r in rows if "llvm-16-doc" in r["source"]], "llvm-16/manual.txt"))
    grams = [word_ngrams(r["text"], 5) for r in rows]
    truth = {
        (a, b)
        for a, b in itertools.permutations(range(len(rows)), 2)
        if len(grams[a]) >= 10 and word_containment(grams[a], grams[b]) >= 0.8
    }
    # the stage, containment on and off
    cfg = NearDedupConfig()
    state, results = run_global(NEAR_DEDUP, split_parts(rows, 4), cfg, tmp_path)
    removed = pa.concat_tables([r.removed for r in results])
    kept = pa.concat_tables([r.kept for r in results])
    index = {r["id"]: i for i, r in enumerate(rows)}
    near = {
        index[i]
        for i in removed.filter(pa.compute.field("reason") == "near_duplicate")["id"].to_pylist()
    }
    contained = removed.filter(pa.compute.field("reason") == "contained_in")
    found = {
        index[i]: index[c]
        for i, c in zip(
            contained["id"].to_pylist(), contained["contained_in"].to_pylist(), strict=True
        )
    }
    # every named container really holds >= 80% of the document, and is kept
    assert all((a, b) in truth for a, b in found.items()) and len(found) >= 20
    assert set(contained["contained_in"].to_pylist()) <= set(kept["id"].to_pylist())
    # the same decision rule over the exact pairs among near dedup's survivors gives the same set
    alive = [i for i in range(len(rows)) if i not in near]
    pos = {g: k for k, g in enumerate(alive)}
    pairs = np.array([(pos[a], pos[b]) for a, b in truth if a in pos and b in pos]).reshape(-1, 2)
    rank = np.arange(len(alive))  # no scores; formats and lengths differ: rank as the stage did
    from curate.dedup.common import keep_rank, read_keys

    mapped = NEAR_DEDUP.map(table_of(rows), cfg)
    rank = keep_rank(
        read_keys(mapped, cfg),
        mapped["id"].combine_chunks(),
        np.zeros(len(rows), np.int64),
        np.arange(len(rows)),
        cfg,
    )[alive]
    chosen = choose_containers(pairs, rank)
    expected = {alive[k] for k in np.flatnonzero(chosen >= 0)}
    recall = len(expected & set(found)) / len(expected)
    precision = len(expected & set(found)) / len(found)
    print(
        f"\ncontainment: {len(truth)} true pairs, {len(expected)} docs to remove, found {len(found)}: recall {recall:.3f} precision {precision:.3f}"
    )
    assert recall >= 0.97 and precision >= 0.95
    assert index[_manual([], "llvm-16/manual.txt")["id"]] not in found  # the manual stays


def test_sampled_candidates_are_the_same_in_query_blocks_of_any_size(monkeypatch) -> None:
    """The sampled index answers a block of queries at a time, the block bounded by the size
    of its product with every row: one query per block or all at once, on one thread or
    three, the same pairs and shares, in the same order."""
    import curate.dedup.containment as containment

    rows = llvm_docs()
    mapped = NEAR_DEDUP.map(table_of(rows), NearDedupConfig())
    sampled = mapped["sampled_shingles"].combine_chunks()
    offsets, values = sampled.offsets.to_numpy(), sampled.flatten().to_numpy()
    queries = np.arange(len(rows))
    got = []
    for budget, threads in ((1, 1), (1, 3), (1 << 40, 1)):
        monkeypatch.setattr(containment, "PRODUCT_BUDGET", budget)
        got.append(containment.sampled_candidates(offsets, values, queries, 0.8, threads=threads))
    (pairs_one, shares_one), (pairs_threads, shares_threads), (pairs_all, shares_all) = got
    assert len(pairs_all) > 10
    assert np.array_equal(pairs_one, pairs_all) and np.array_equal(shares_one, shares_all)
    assert np.array_equal(pairs_threads, pairs_all) and np.array_equal(shares_threads, shares_all)


def test_containment_threads_stay_within_omp_num_threads(monkeypatch) -> None:
    """A scheduler's reservation (Ray sets OMP_NUM_THREADS to a task's CPUs) bounds the
    containment search's threads; unset or invalid, the process's CPU affinity does."""
    from curate.dedup.containment import available_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = available_cores()
    assert cores == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert available_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores + 5))
    assert available_cores() == cores
    for bad in ("0", "two", ""):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        assert available_cores() == cores


def test_choose_containers_chains_and_mutual() -> None:
    from curate.dedup.containment import choose_containers

    # 0 in 1 in 2 (a chain), 0 also in 2; 3 and 4 contain each other; 5 in 4 only
    pairs = np.array([[0, 1], [1, 2], [0, 2], [3, 4], [4, 3], [5, 4]])
    rank = np.array([0, 1, 2, 4, 3, 5])  # 4 ranks better than 3
    got = choose_containers(pairs, rank)
    assert got.tolist() == [2, 2, -1, 4, -1, 4]
    # without 0 -> 2, the chain keeps 0 (its only container is removed)
    got = choose_containers(np.array([[0, 1], [1, 2]]), np.arange(3))
    assert got.tolist() == [-1, 2, -1]
    # a three-cycle never removes every member
    got = choose_containers(np.array([[0, 1], [1, 2], [2, 0]]), np.arange(3))
    assert (got == -1).sum() >= 1 and all(got[g] == -1 for g in got[got >= 0])


# --- paragraph dedup ------------------------------------------------------------------------


def licence_paragraph() -> str:
    """The GPL permission paragraph of Debian Reference's copyright file (real text)."""
    text = (SAMPLE / "LICENSES/debian-reference-en.copyright").read_text(encoding="utf-8")
    block = text.split("Permission is granted to make", 1)[1].split("[See", 1)[0]
    lines = [line.strip() for line in block.splitlines() if line.strip() not in ("", ".")]
    return "Permission is granted to make " + " ".join(lines)


def test_shared_licence_paragraph_keeps_both_and_paragraph_dedup_cuts_only_it(
    tmp_path: Path,
) -> None:
    from curate.dedup.paragraph import PARAGRAPH_DEDUP, ParagraphDedupConfig

    licence = licence_paragraph()
    assert len(licence) > 500
    coding = next(
        r for r in llvm_docs() if r["source"].endswith("16-doc/html/_sources/FAQ.rst.txt")
    )
    guide = html_text(next((SAMPLE / "html/debian-reference-en").rglob("*.html")))
    a = _doc("llvm/FAQ.rst.txt", coding["text"] + "\n\n" + licence)
    b = dict(_doc("debian-reference/ch08.en.html", guide + "\n\n" + licence), domain="web")
    parts = [table_of([a]), table_of([b])]
    state, results = run_global(NEAR_DEDUP, parts, NearDedupConfig(), tmp_path)
    assert [r.stats.kept for r in results] == [1, 1] and state.num_rows == 0
    # paragraph dedup: each loses exactly the licence paragraph, counted in bytes per domain
    cfg = ParagraphDedupConfig(min_docs=2)
    state, results = run_global(PARAGRAPH_DEDUP, parts, cfg, tmp_path)
    assert state.num_rows == 1 and state["docs"].to_pylist() == [2]
    for res, doc in zip(results, (a, b), strict=True):
        assert res.stats.kept == 1
        row = res.kept.to_pylist()[0]
        assert licence not in row["text"] and "Permission is granted" not in row["text"]
        assert row["paragraphs_removed"] == 1
        assert row["paragraph_bytes_removed"] == len(licence.encode())
        before = [q for q in re.split(r"\n\s*\n", doc["text"]) if q.strip()]
        after = [q for q in re.split(r"\n\s*\n", row["text"]) if q.strip()]
        assert [q.strip() for q in before if q != licence] == [q.strip() for q in after]
    # three documents needed by default: nothing cut; a document of licence only is removed
    state, results = run_global(PARAGRAPH_DEDUP, parts, ParagraphDedupConfig(), tmp_path)
    assert state.num_rows == 0 and all(
        r.kept["paragraphs_removed"].to_pylist() == [0] for r in results
    )
    only = _doc("licence.txt", licence)
    state, results = run_global(
        PARAGRAPH_DEDUP, [*parts, table_of([only])], ParagraphDedupConfig(), tmp_path
    )
    assert results[2].stats.removed == {"only_repeated_paragraphs": 1}
    assert results[2].removed["text"].to_pylist() == [licence]  # its text is kept in the record


# --- inspect and the report on a run ---------------------------------------------------------


def test_inspect_names_the_survivor_and_report_shows_dedup_by_kind(tmp_path: Path) -> None:
    from curate.dedup.paragraph import PARAGRAPH_DEDUP, ParagraphDedupConfig
    from curate.html_report import dedup_kinds_section
    from curate.inspect import inspect_run
    from curate.rundir import stage_order
    from curate.storage import write_json_atomic
    from tests.run_sample import _write_part

    rows = llvm_docs()
    manual = _manual([r for r in rows if "llvm-16-doc" in r["source"]], "llvm-16/manual.txt")
    licence = licence_paragraph()
    rows.append(manual)
    rows.append(dict(rows[0], id=doc_id("copy"), source="copy/CodingStandards.rst.txt"))
    # three unrelated pages (three languages) that carry the same licence paragraph
    for lang in ("en", "de", "fr"):
        page = next((SAMPLE / f"html/debian-reference-{lang}").rglob("*.html"))
        text = html_text(page) + "\n\n" + licence
        rows.append(dict(_doc(f"debian-reference-{lang}/{page.name}", text), domain="web"))
    parts = split_parts(rows, 3)
    run = tmp_path / "run"
    stats = []
    for stage, cfg in (
        (EXACT_DEDUP, ExactDedupConfig()),
        (NEAR_DEDUP, NearDedupConfig()),
        (PARAGRAPH_DEDUP, ParagraphDedupConfig()),
    ):
        state, results = run_global(stage, parts, cfg, tmp_path / stage.name)
        merged = StageStats(stage=stage.name)
        for i, res in enumerate(results):
            _write_part(str(run), stage.name, i, res, "test")
            merged = merged.merge(res.stats)
        stats.append(merged)
        parts = [res.kept for res in results]
    # what a run records before its steps: the stages (config.json) and its parts (parts.json);
    # the counters come from the parts' done markers
    names = [{"name": s.stage} for s in stats]
    write_json_atomic({"config": {"stages": names}}, str(run / "config.json"))
    write_json_atomic({"parts": [[] for _ in parts]}, str(run / "parts.json"))

    text = inspect_run(str(run), per_reason=50, stage="near_dedup")
    contained = text.split("-- removed: contained_in", 1)[1].split("\n-- ", 1)[0]
    assert f"survivor: {manual['id']}  llvm-16/manual.txt [txt]  (kept)" in contained
    near = text.split("-- removed: near_duplicate", 1)[1].split("\n-- ", 1)[0]
    assert near.count("survivor: ") >= near.count("\n  - ")
    exact = inspect_run(str(run), per_reason=50, stage="exact_dedup")
    assert f"survivor: {rows[0]['id']}" in exact

    section = dedup_kinds_section(str(run), stage_order(str(run)))
    by_kind = {(r[0], r[2]): r for r in section.rows}
    n_contained = stats[1].removed["contained_in"]
    assert (
        by_kind["exact", "all"][4] == stats[0].removed["exact_duplicate"]
        and by_kind["contained", "all"][4] == n_contained
    )
    assert (
        by_kind["contained", "all"][3] >= 1
        and by_kind["near", "all"][4] == stats[1].removed["near_duplicate"]
    )
    # the licence paragraph, in every llvm page still kept: cut from each, bytes per domain
    para = by_kind["paragraph", "web"]
    # the licence, and command lines the three translations share: 3 pages trimmed, none emptied
    assert para[5] == 3 and para[3] >= 3 and para[4] == 0 and stats[2].kept == stats[2].docs_in
    assert para[6] >= round(3 * len(licence.encode()) / 1e6, 3)
    assert section.png and "contained" in section.summary
