"""Real token shards for the train/ tests, built from data/sample with the real writer.

Kept small so the trainer tests run in seconds on 2 cores: English prose and rst docs
(devil's dictionary, llvm docs), a 1024-piece BPE tokenizer, rows of 64 tokens.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from curate.shards.format import Manifest
from curate.shards.write import ShardConfig, encode_part, write_shards
from curate.tokenizer import TokenizerConfig, train_tokenizer
from tests.shards_sample import SAMPLE, sample_docs

SEQ_LEN = 64
VOCAB = 1024


def small_docs(
    max_bytes: int = 400_000, root: Path = SAMPLE, packages: tuple[str, ...] | None = None
) -> pa.Table:
    """The first documents of the sample (rst + prose + fortune) up to ~max_bytes of text."""
    docs = sample_docs(("rst", "prose", "fortune"), root, packages)
    sizes = [len(t.encode()) for t in docs.column("text").to_pylist()]
    keep, total = [], 0
    for i, n in enumerate(sizes):
        if total + n > max_bytes:
            continue
        keep.append(i)
        total += n
    return docs.take(keep)


def build_shards(
    out: Path,
    seq_len: int = SEQ_LEN,
    vocab: int = VOCAB,
    max_bytes: int = 400_000,
    *,
    root: Path = SAMPLE,
    packages: tuple[str, ...] | None = None,
    tokenizer_bytes: int | None = None,
) -> Manifest:
    """Shards of the first ~``max_bytes`` of rst + prose + fortune text from data/sample (or
    ``root``/``packages``, see ``sample_docs``); the tokenizer trains on ``tokenizer_bytes`` of
    it (default: all)."""
    docs = small_docs(max_bytes, root, packages)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(
        [docs],
        TokenizerConfig(vocab_size=vocab, sample_bytes=tokenizer_bytes or max_bytes, num_threads=1),
        str(out.parent / f"sp-{out.name}.model"),
    )
    cfg = ShardConfig(seq_len=seq_len, sequences_per_file=400, val_fraction=0.05, seed=1)
    return write_shards([encode_part(docs, tok, cfg)], out, cfg, tok, source_run="tests")
