"""Encode → pack → shuffle → split → Arrow shards + manifest, on real sample documents."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
import sentencepiece as spm

from curate import mix
from curate.shards.format import check_shard, load_manifest, open_shard, sha256_file
from curate.shards.write import ShardConfig, encode_part, write_shards
from curate.tokenizer import TokenizerConfig, train_tokenizer
from tests.shards_sample import sample_docs, split_parts

SEQ = 256
CFG = ShardConfig(seq_len=SEQ, sequences_per_file=300, val_fraction=0.05, seed=3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    docs = sample_docs()
    mcfg = mix.MixConfig(weights={"rst": 3, "fortune": 3, "code": 2, "prose": 2}, max_epochs=3)
    parts = split_parts(docs, 3)
    available = mix.sum_counts(mix.available_tokens(p, mcfg) for p in parts)
    plan = mix.plan_mixture(available, mcfg.model_copy(update={"total_tokens": 700_000}))
    mixed = [mix.apply_mixture(p, plan) for p in parts]
    tmp = tmp_path_factory.mktemp("shards")
    tok = train_tokenizer(
        mixed, TokenizerConfig(vocab_size=3000, sample_bytes=1_000_000), str(tmp / "sp.model")
    )
    encoded = [encode_part(p, tok, CFG) for p in mixed]
    manifest = write_shards(
        encoded, tmp / "a", CFG, tok, mixture_target=plan.target_weights, source_run="run-1"
    )
    return {
        "docs": docs,
        "plan": plan,
        "mixed": mixed,
        "tok": tok,
        "encoded": encoded,
        "out": tmp / "a",
        "manifest": manifest,
        "tmp": tmp,
    }


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_inputs_give_identical_bytes(setup):
    # re-encode from the documents cut into other parts, in another order: same bytes
    docs = pa.concat_tables(setup["mixed"])
    encoded = [encode_part(p, setup["tok"], CFG) for p in split_parts(docs, 5)[::-1]]
    write_shards(
        encoded,
        setup["tmp"] / "b",
        CFG,
        setup["tok"],
        mixture_target=setup["plan"].target_weights,
        source_run="run-1",
    )
    a, b = _files(setup["out"]), _files(setup["tmp"] / "b")
    assert a.keys() == b.keys() and len(a) > 4
    assert all(a[k] == b[k] for k in a)
    write_shards(
        setup["encoded"], setup["tmp"] / "c", CFG.model_copy(update={"seed": 4}), setup["tok"]
    )
    c = _files(setup["tmp"] / "c")
    assert c["train/shard-00000.arrow"] != a["train/shard-00000.arrow"]


def test_shards_open_memory_mapped_and_with_datasets(setup):
    m = load_manifest(setup["out"])
    assert m == setup["manifest"] and m.dtype == "uint16" and m.seq_len == SEQ
    for split, info in m.splits.items():
        assert info.files, split
        for f in info.files:
            path = setup["out"] / f.path
            assert sha256_file(path) == f.sha256
            before = pa.total_allocated_bytes()
            table = open_shard(path)
            assert pa.total_allocated_bytes() == before  # zero-copy from the memory map
            check_shard(table, m, path)
            assert table.num_rows == f.sequences
            ds = datasets.Dataset.from_file(str(path))
            assert len(ds) == f.sequences
            row = int(f.sequences) // 2
            assert ds[row]["input_ids"] == table.column("input_ids")[row].as_py()
            assert ds[row]["doc_ids"] == table.column("doc_ids")[row].as_py()


def _rows(out: Path, split: str) -> list[dict]:
    m = load_manifest(out)
    return [r for f in m.splits[split].files for r in open_shard(out / f.path).to_pylist()]


def test_provenance_points_at_the_documents_tokens(setup):
    sp = spm.SentencePieceProcessor(model_file=setup["tok"])
    texts = dict(
        zip(
            setup["docs"].column("id").to_pylist(),
            setup["docs"].column("text").to_pylist(),
            strict=True,
        )
    )
    eos = sp.eos_id()
    segments: dict[str, list[int]] = {}
    checked = 0
    for row in _rows(setup["out"], "train")[:400]:
        ids = row["input_ids"]
        assert len(ids) == SEQ + 1 and row["doc_starts"][0] == 0
        ends = row["doc_starts"][1:] + [len(ids)]
        for doc, start, end, off in zip(
            row["doc_ids"], row["doc_starts"], ends, row["doc_offsets"], strict=True
        ):
            if doc not in segments:
                segments[doc] = sp.encode(texts[doc]) + [eos]
            segment = segments[doc]
            assert ids[start:end] == segment[off : off + end - start]
            checked += 1
    assert checked > 400


def test_counts_split_and_mixture_match_the_files(setup):
    m, out = setup["manifest"], setup["out"]
    n_tok = {}
    domain = {}
    for e in setup["encoded"]:
        for i, d, s, n, r in zip(
            *(e.column(c).to_pylist() for c in ("id", "domain", "split", "n_tokens", "repeats")),
            strict=True,
        ):
            n_tok[i] = (s, n, r)
            domain[i] = d
    per_split_ids = {}
    for split, info in m.splits.items():
        rows = _rows(out, split)
        assert len(rows) == info.sequences == sum(f.sequences for f in info.files)
        assert info.tokens == sum(f.tokens for f in info.files) == len(rows) * (SEQ + 1)
        # per-domain token counts recomputed from the provenance
        recount: dict[str, int] = {}
        for r in rows:
            ends = r["doc_starts"][1:] + [SEQ + 1]
            for d, s, e in zip(r["doc_ids"], r["doc_starts"], ends, strict=True):
                recount[domain[d]] = recount.get(domain[d], 0) + e - s
        assert recount == info.tokens_per_domain
        assert sum(info.tokens_per_domain.values()) == info.tokens
        # every token of every copy goes in, minus a tail shorter than one row (dropped)
        stream = sum((n + 1) * r for s, n, r in n_tok.values() if s == split)
        assert 0 <= stream - info.tokens < SEQ + 1
        per_split_ids[split] = {d for r in rows for d in r["doc_ids"]}
        assert all(n_tok[d][0] == split for d in per_split_ids[split])
    assert per_split_ids["val"] and not per_split_ids["val"] & per_split_ids["train"]
    assert m.mixture_target == setup["plan"].target_weights
    assert sum(m.mixture_achieved.values()) == pytest.approx(1.0)
    assert m.mixture_achieved.keys() == m.mixture_target.keys()
    assert m.tokenizer.sha256 == sha256_file(out / m.tokenizer.path)
    assert m.tokenizer.vocab_size == 3000 and m.source_run == "run-1"


def test_bos_and_padded_tail(setup):
    cfg = CFG.model_copy(update={"add_bos": True, "tail": "pad", "sequences_per_file": 10_000})
    encoded = [encode_part(p, setup["tok"], cfg) for p in setup["mixed"]]
    m = write_shards(encoded, setup["tmp"] / "pad", cfg, setup["tok"])
    sp = spm.SentencePieceProcessor(model_file=setup["tok"])
    for split, info in m.splits.items():
        table = open_shard(setup["tmp"] / "pad" / info.files[0].path)
        ids = np.array(table.column("input_ids").to_pylist())
        pads = ids == sp.pad_id()
        assert pads.sum() == ids.size - info.tokens > 0, split  # only the tail row is padded
        padded_row = np.flatnonzero(pads.any(axis=1))
        assert len(padded_row) == 1
        tail = ids[padded_row[0]]
        assert pads[padded_row[0], int((~pads[padded_row[0]]).sum()) :].all()
        starts = table.column("doc_starts").to_pylist()
        offsets = table.column("doc_offsets").to_pylist()
        for r in range(len(ids)):
            for s, o in zip(starts[r], offsets[r], strict=True):
                if o == 0:
                    assert ids[r, s] == sp.bos_id()
        assert tail[-1] == sp.pad_id()


def _write_in_tasks(encoded, out: Path, cfg: ShardConfig, tok: str, writers: int, target=None):
    """The four steps of ``curate.shards.parallel`` run in order, here (the plan runs them as
    tasks): plan → one pack task per range of parts → one write task per writer → manifest."""
    from curate.shards.parallel import (
        assemble_manifest,
        pack_range,
        plan_layout,
        write_group,
    )
    from curate.shards.write import tokenizer_info

    info, model = tokenizer_info(tok, cfg.add_bos)
    dtype = "uint16" if info.vocab_size <= 1 << 16 else "uint32"
    layout, summary = plan_layout(encoded, cfg)
    n = len(encoded)
    pieces = []
    for w in range(writers):
        lo, hi = w * n // writers, (w + 1) * n // writers
        mine = layout.filter(
            pa.compute.and_(
                pa.compute.greater_equal(layout.column("part"), lo),
                pa.compute.less(layout.column("part"), hi),
            )
        )
        parts = {k: encoded[k] for k in range(lo, hi)}
        pieces.append(
            pack_range(parts, mine, summary, cfg, writers, (info.bos_id, info.eos_id), target)
        )
    results = []
    for w in range(writers):
        mine = pa.concat_tables(p.filter(pa.compute.equal(p.column("writer"), w)) for p in pieces)
        files, result = write_group(mine, summary, cfg, dtype, info.pad_id)
        for rel, data in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        results.append(result)
    (out / "tokenizer.model").write_bytes(model)
    manifest = assemble_manifest(summary, results, cfg, info, dtype, target, "run-1")
    from curate.shards.format import write_manifest

    write_manifest(manifest, out)
    return manifest


@pytest.mark.parametrize(
    ("writers", "update"),
    [
        (1, {}),
        (2, {}),
        (3, {"sequences_per_file": 7}),
        (4, {"add_bos": True, "tail": "pad", "sequences_per_file": 50}),
    ],
)
def test_shards_written_by_several_tasks_are_the_same_bytes(setup, writers, update):
    """Plan, pack per range of parts, write per range of files, manifest: byte for byte what
    one ``write_shards`` writes, whatever the number of tasks."""
    cfg = CFG.model_copy(update=update)
    encoded = setup["encoded"]
    if update.get("add_bos"):
        encoded = [encode_part(p, setup["tok"], cfg) for p in setup["mixed"]]
    target = setup["plan"].target_weights
    one = setup["tmp"] / f"one-{writers}"
    write_shards(encoded, one, cfg, setup["tok"], mixture_target=target, source_run="run-1")
    many = setup["tmp"] / f"many-{writers}"
    _write_in_tasks(encoded, many, cfg, setup["tok"], writers, target)
    a, b = _files(one), _files(many)
    assert a.keys() == b.keys() and len(a) > 3
    assert [k for k in a if a[k] != b[k]] == []
