"""SentencePiece training on a mixture sample of real documents (small vocab, quick)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sentencepiece as spm

from curate import mix
from curate.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    TokenizerConfig,
    bytes_per_token,
    in_sample,
    train_tokenizer,
    training_sample,
)
from tests.shards_sample import SAMPLE, sample_docs, split_parts

CFG = TokenizerConfig(vocab_size=2000, sample_bytes=1_500_000, num_threads=2)


@pytest.fixture(scope="module")
def mixed() -> list[pa.Table]:
    parts = split_parts(sample_docs(), 3)
    cfg = mix.MixConfig(weights={"rst": 1, "fortune": 1, "code": 1, "prose": 1}, max_epochs=4)
    available = mix.sum_counts(mix.available_tokens(p, cfg) for p in parts)
    plan = mix.plan_mixture(available, cfg.model_copy(update={"total_tokens": 1_000_000}))
    return [mix.apply_mixture(p, plan) for p in parts]


@pytest.fixture(scope="module")
def model_path(mixed, tmp_path_factory) -> str:
    return train_tokenizer(mixed, CFG, str(tmp_path_factory.mktemp("tok") / "sp.model"))


def test_plain_sentencepiece_loads_it_with_fixed_special_ids(model_path):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    assert sp.get_piece_size() == CFG.vocab_size
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID)
    pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    assert "▁▁▁▁" in pieces  # indentation runs are pieces
    assert "<0x0A>" in pieces and "<0xE3>" in pieces  # byte fallback
    assert any("\n" in p and len(p) > 1 for p in pieces)  # newlines merge with punctuation


def test_round_trip_code_prose_and_unseen_scripts(model_path):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    docs = sample_docs()
    texts = docs.column("text").to_pylist()
    assert all(sp.decode(sp.encode(t)) == t for t in texts)
    # Japanese and Chinese pages were never in the sample: bytes, not <unk>, and exact
    for lang in ("ja", "zh-cn"):
        page = next((SAMPLE / "html" / f"debian-reference-{lang}").rglob("*.html"))
        text = page.read_text(encoding="utf-8")
        ids = sp.encode(text)
        assert UNK_ID not in ids and sp.decode(ids) == text
    code = [t for t, d in zip(texts, docs.column("domain").to_pylist(), strict=True) if d == "code"]
    indented = [t for t in code if "\n        " in t]
    assert indented and all(sp.decode(sp.encode(t)) == t for t in indented)
    assert bytes_per_token(sp, code) > 2.0


def test_sample_follows_the_mixture_and_leaves_a_held_out_set(mixed):
    sentences, summary = training_sample(mixed, CFG)
    assert summary["bytes"] == pytest.approx(CFG.sample_bytes, rel=0.25)
    mixture_bytes: dict[str, float] = {}
    for p in mixed:
        nbytes = pa.compute.binary_length(p.column("text").cast(pa.large_binary())).to_numpy()
        reps = p.column("repeats").to_numpy()
        for d, b in zip(p.column("domain").to_pylist(), (nbytes * reps).tolist(), strict=True):
            mixture_bytes[d] = mixture_bytes.get(d, 0) + b
    total = sum(mixture_bytes.values())
    sampled = summary["bytes_per_domain"]
    for d, b in mixture_bytes.items():
        assert sampled[d] / summary["bytes"] == pytest.approx(b / total, abs=0.08), d
    assert all(len(s.encode()) <= CFG.max_sentence_bytes for s in sentences)
    held_out = sum(int((~in_sample(p, summary["probability"], CFG.seed)).sum()) for p in mixed)
    assert 0 < held_out < sum(p.num_rows for p in mixed)


def test_training_is_deterministic_and_unigram_works(mixed, model_path, tmp_path):
    again = train_tokenizer(list(reversed(mixed)), CFG, str(tmp_path / "again.model"))
    assert Path(again).read_bytes() == Path(model_path).read_bytes()
    summary = json.loads(Path(again + ".json").read_text())  # written next to the model
    assert summary["config"]["vocab_size"] == CFG.vocab_size
    other_seed = train_tokenizer(
        mixed, CFG.model_copy(update={"seed": 5}), str(tmp_path / "seed5.model")
    )
    assert Path(other_seed).read_bytes() != Path(model_path).read_bytes()

    uni_cfg = CFG.model_copy(
        update={"model_type": "unigram", "vocab_size": 1000, "sample_bytes": 300_000}
    )
    uni = spm.SentencePieceProcessor(
        model_file=train_tokenizer(mixed, uni_cfg, str(tmp_path / "uni.model"))
    )
    text = mixed[0].column("text")[0].as_py()
    assert uni.get_piece_size() == 1000 and uni.decode(uni.encode(text)) == text


def test_plain_strings_are_accepted(tmp_path):
    texts = [p.read_text(encoding="utf-8") for p in sorted((SAMPLE / "rst").rglob("*.rst.txt"))]
    path = train_tokenizer(
        texts, CFG.model_copy(update={"vocab_size": 800}), str(tmp_path / "s.model")
    )
    sp = spm.SentencePieceProcessor(model_file=path)
    lens = np.array([len(ids) for ids in sp.encode(texts[:5])])
    assert (lens > 0).all()


@pytest.mark.timeout(20)  # the old code looped here forever, growing its memory
def test_split_sentences_terminates_and_bounds_pieces():
    from curate.tokenizer import split_sentences

    with pytest.raises(ValueError, match="at least 4"):
        split_sentences("abc\n" * 3, 3)
    text = "añ😀z" * 5 + "\n" + "x" * 10
    pieces = split_sentences(text, 4)
    assert "".join(pieces) == text
    assert all(0 < len(p.encode()) <= 4 for p in pieces)
    with pytest.raises(ValueError, match="max_sentence_bytes"):
        TokenizerConfig(max_sentence_bytes=3)
    for bad in ({"num_threads": 0}, {"character_coverage": 0}, {"vocab_size": 200}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TokenizerConfig(**bad)
    assert TokenizerConfig(vocab_size=200, byte_fallback=False).vocab_size == 200
