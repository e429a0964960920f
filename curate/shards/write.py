"""Encode documents (map, per part) and pack them into shuffled token shards (reduce).

``encode_part(docs, tokenizer, cfg)`` turns one part of documents into an *encoded part*: one
row per document with its token ids (no BOS/EOS), its token count, its ``repeats`` (from the
mixer, 1 if absent) and its split. The split is drawn per **document** from a stable hash of its
id (``val_fraction``), so no validation document (or any repeat of it) ever reaches train.

``write_shards(encoded_parts, out_dir, cfg, tokenizer_path)`` then, per split:

1. lays out every document copy (``repeats`` copies) in an order sorted by a stable hash of
   (id, copy, seed): independent of part boundaries and order, and repeats are scattered;
2. concatenates them as ``[BOS] tokens EOS`` (BOS only with ``add_bos``) into one stream;
3. cuts the stream into non-overlapping rows of ``seq_len + 1`` tokens (inputs and shifted
   targets of a row come from the same row). The incomplete tail is dropped (``tail="drop"``,
   default: at most ``seq_len`` tokens per split) or padded with PAD (``tail="pad"``); PAD never
   appears anywhere else;
4. shuffles the rows with a seeded permutation and writes ``<split>/shard-NNNNN.arrow`` files
   of ``sequences_per_file`` rows in the Arrow IPC *streaming* format (what both
   ``curate.shards.format.open_shard`` and ``datasets.Dataset.from_file`` memory-map), plus
   ``manifest.json``. The tokenizer model is copied next to the manifest.

Provenance per row (see ``format.py``): ``doc_ids``, ``doc_starts`` (position in the row where
that document's piece begins) and ``doc_offsets`` (index, inside the document's segment
``[BOS] tokens EOS``, of the first token in this row; without BOS that is the token index).

Same encoded parts + config ⇒ identical bytes of every file and of the manifest.
The reduce holds one split's tokens in memory (4 bytes/token while packing).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import sentencepiece as spm
from pydantic import BaseModel, ConfigDict, Field

from curate.mix import mix_keys, stable_uniform
from curate.shards.format import (
    Manifest,
    ShardFile,
    SplitInfo,
    TokenizerInfo,
    shard_schema,
    token_dtype,
    write_manifest,
)
from curate.storage import write_bytes_atomic
from curate.tokenizer import load_tokenizer

SPLITS = ("train", "val")
TOKENIZER_NAME = "tokenizer.model"

ENCODED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("lang", pa.string()),
        pa.field("repeats", pa.uint8(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("n_tokens", pa.int64(), nullable=False),
        pa.field("tokens", pa.large_list(pa.uint32()), nullable=False),
    ]
)


MIN_SEQ_LEN = 8  # shorter rows teach nothing (and 0 "succeeds" with 1-token rows)


class ShardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq_len: int = Field(2048, ge=MIN_SEQ_LEN)
    sequences_per_file: int = Field(4096, ge=1)
    val_fraction: float = Field(0.005, ge=0, lt=1)
    add_bos: bool = False
    tail: Literal["drop", "pad"] = "drop"
    seed: int = 0
    encode_threads: int = Field(1, ge=1)  # sentencepiece threads inside one encode task
    # shard-writing tasks (``curate.shards.parallel``): the same bytes, in parallel
    writers: int = Field(1, ge=1)


# how the shard writing is cut into tasks changes how it runs, not its bytes: not hashed
RUN_OPTIONS = frozenset({"writers"})


def _processor(tokenizer: str | Path | spm.SentencePieceProcessor) -> spm.SentencePieceProcessor:
    if isinstance(tokenizer, spm.SentencePieceProcessor):
        return tokenizer
    return load_tokenizer(tokenizer)  # a local path or any fsspec URL


def encode_texts(
    sp: spm.SentencePieceProcessor, texts: list[str], num_threads: int = 1
) -> pa.LargeListArray:
    """Token ids of each text as one Arrow list array (flat uint32 values + offsets)."""
    ids = sp.encode(texts, num_threads=num_threads)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.uint32, count=int(offsets[-1]))
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))


def split_of(ids: list[str], val_fraction: float, seed: int) -> list[str]:
    """train/val per document by a stable hash of its id."""
    u = stable_uniform(ids, seed, "split")
    return np.where(u < val_fraction, "val", "train").tolist()


def encode_part(
    docs: pa.Table, tokenizer: str | Path | spm.SentencePieceProcessor, cfg: ShardConfig
) -> pa.Table:
    """Map: one part of documents → its encoded part (``ENCODED_SCHEMA``)."""
    sp = _processor(tokenizer)
    tokens = encode_texts(sp, docs.column("text").to_pylist(), cfg.encode_threads)
    ids = docs.column("id").to_pylist()
    n = docs.num_rows
    repeats = (
        docs.column("repeats").cast(pa.uint8())
        if "repeats" in docs.column_names
        else pa.array(np.ones(n, np.uint8))
    )
    lang = docs.column("lang") if "lang" in docs.column_names else pa.nulls(n, pa.string())
    return pa.table(
        {
            "id": docs.column("id"),
            "domain": docs.column("domain"),
            "lang": lang,
            "repeats": repeats,
            "split": pa.array(split_of(ids, cfg.val_fraction, cfg.seed), pa.string()),
            "n_tokens": pa.array(np.diff(tokens.offsets.to_numpy()), pa.int64()),
            "tokens": tokens,
        },
        schema=ENCODED_SCHEMA,
    )


def _read(parts: Iterable[pa.Table | str | Path]) -> pa.Table:
    tables = [p if isinstance(p, pa.Table) else pq.read_table(p) for p in parts]
    if not tables:
        return ENCODED_SCHEMA.empty_table()
    return pa.concat_tables([t.select(ENCODED_SCHEMA.names).cast(ENCODED_SCHEMA) for t in tables])


def copy_order(ids: list[str], repeats: np.ndarray, seed: int) -> np.ndarray:
    """The stream order of one split's document copies: the document (index into ``ids``) of
    each segment, sorted by a stable hash of (id, copy, seed); ties by document, then copy."""
    n_docs = len(ids)
    copy_doc = np.repeat(np.arange(n_docs), repeats)
    copy_no = np.arange(len(copy_doc)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    u = stable_uniform(
        (f"{ids[d]}#{c}" for d, c in zip(copy_doc.tolist(), copy_no.tolist(), strict=True)),
        seed,
        "order",
    )
    return copy_doc[np.lexsort((copy_no, copy_doc, u))]


def stream_rows(total: int, cfg: ShardConfig) -> tuple[int, int]:
    """(rows, tokens of the last row when it is a padded tail else 0) of a stream of
    ``total`` tokens cut into rows of ``seq_len + 1``."""
    n_rows, rem = divmod(total, cfg.seq_len + 1)
    if cfg.tail == "pad" and rem:
        return n_rows + 1, rem
    return n_rows, 0


def row_pieces(
    seg_start: np.ndarray, seg_end: np.ndarray, n_rows: int, row_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut segments (stream ``[start, end)``) at row boundaries: one piece per (segment, row)
    of the first ``n_rows`` rows, in stream order. Returns (segment, row, start in the row,
    offset in the segment, length) per piece: the provenance entries of the rows."""
    first = seg_start // row_len
    last = np.minimum((seg_end - 1) // row_len, n_rows - 1)
    keep = first < n_rows
    seg = np.flatnonzero(keep)
    first, last = first[keep], last[keep]
    per_seg = last - first + 1
    piece_seg = np.repeat(seg, per_seg)
    piece_row = np.repeat(first, per_seg) + (
        np.arange(len(piece_seg)) - np.repeat(np.cumsum(per_seg) - per_seg, per_seg)
    )
    row_start = piece_row * row_len
    start_in_row = np.maximum(seg_start[piece_seg] - row_start, 0)
    offset_in_seg = np.maximum(row_start - seg_start[piece_seg], 0)
    end_in_row = np.minimum(seg_end[piece_seg] - row_start, row_len)
    return piece_seg, piece_row, start_in_row, offset_in_seg, end_in_row - start_in_row


class _Packed:
    """One split packed into rows, with flat provenance entries (one per document piece)."""

    def __init__(self, docs: pa.Table, cfg: ShardConfig, dtype: str, bos: int, eos: int, pad: int):
        row_len = cfg.seq_len + 1
        repeats = docs.column("repeats").to_numpy(zero_copy_only=False).astype(np.int64)
        seg_doc = copy_order(docs.column("id").to_pylist(), repeats, cfg.seed)

        tokens = docs.column("tokens").combine_chunks()
        src_off = tokens.offsets.to_numpy()
        values = tokens.values.to_numpy(zero_copy_only=False)
        n_tok = np.diff(src_off)
        extra = 1 + int(cfg.add_bos)
        seg_len = n_tok[seg_doc] + extra
        seg_start = np.zeros(len(seg_doc) + 1, dtype=np.int64)
        np.cumsum(seg_len, out=seg_start[1:])
        total = int(seg_start[-1])

        n_rows, rem = stream_rows(total, cfg)
        stream = np.full(n_rows * row_len if cfg.tail == "pad" else total, pad, dtype=dtype)
        body = int(cfg.add_bos)
        for d, s in zip(seg_doc.tolist(), seg_start[:-1].tolist(), strict=True):
            a, b = src_off[d], src_off[d + 1]
            if cfg.add_bos:
                stream[s] = bos
            stream[s + body : s + body + (b - a)] = values[a:b]
            stream[s + body + (b - a)] = eos
        self.rows = stream[: n_rows * row_len].reshape(n_rows, row_len)
        self.row_tokens = np.full(n_rows, row_len, dtype=np.int64)
        if rem:
            self.row_tokens[-1] = rem
        self.dropped_tokens = total - int(self.row_tokens.sum())

        # Provenance: each segment covers rows first..last; one entry per (segment, row).
        seg, entry_row, start, offset, length = row_pieces(
            seg_start[:-1], seg_start[1:], n_rows, row_len
        )
        self.entry_doc = seg_doc[seg]
        self.entry_start = start.astype(np.int32)
        self.entry_offset = offset.astype(np.int64)
        self.entry_tokens = length
        # entries are sorted by row (segments are in stream order), so a row is a contiguous run
        self.row_offsets = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(entry_row, minlength=n_rows), out=self.row_offsets[1:])


def _list_column(offsets: np.ndarray, values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def shard_table(
    input_ids: np.ndarray,
    entries_per_row: np.ndarray,
    doc_ids: pa.Array,
    doc_starts: np.ndarray,
    doc_offsets: np.ndarray,
    schema: pa.Schema,
) -> pa.Table:
    """One shard file's table: ``input_ids`` (rows × (seq_len + 1)) and the provenance
    entries of its rows, in row order (``entries_per_row`` of them per row)."""
    offsets = np.zeros(len(input_ids) + 1, dtype=np.int64)
    np.cumsum(entries_per_row, out=offsets[1:])
    row_len = input_ids.shape[1]
    value_type = schema.field("input_ids").type.value_type
    return pa.Table.from_arrays(
        [
            pa.FixedSizeListArray.from_arrays(pa.array(input_ids.reshape(-1), value_type), row_len),
            _list_column(offsets, doc_ids),
            _list_column(offsets, pa.array(doc_starts, pa.int32())),
            _list_column(offsets, pa.array(doc_offsets, pa.int64())),
        ],
        schema=schema,
    )


def _table_for_rows(
    packed: _Packed, rows: np.ndarray, ids: pa.Array, schema: pa.Schema
) -> pa.Table:
    lo, hi = packed.row_offsets[rows], packed.row_offsets[rows + 1]
    counts = hi - lo
    sel = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
    return shard_table(
        packed.rows[rows],
        counts,
        ids.take(pa.array(packed.entry_doc[sel])),
        packed.entry_start[sel],
        packed.entry_offset[sel],
        schema,
    )


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _sum_by(labels: list[str | None], index: np.ndarray, weights: np.ndarray) -> dict[str, int]:
    names = ["other" if x is None else x for x in labels]  # no mixture weight
    codes = {lab: i for i, lab in enumerate(sorted(set(names)))}
    label_code = np.array([codes[x] for x in names], dtype=np.int64)
    sums = np.bincount(label_code[index], weights=weights, minlength=len(codes))
    return {lab: int(sums[i]) for lab, i in codes.items() if sums[i]}


def tokenizer_info(
    tokenizer_path: str | Path, add_bos: bool = False
) -> tuple[TokenizerInfo, bytes]:
    """The manifest's entry for the tokenizer at ``tokenizer_path`` (its special ids, hash and
    model type, from the ``.json`` summary next to it) and the model's bytes."""
    model_bytes = Path(tokenizer_path).read_bytes()
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    bos, eos, pad = sp.bos_id(), sp.eos_id(), sp.pad_id()
    if min(eos, pad) < 0 or (add_bos and bos < 0):
        raise ValueError("tokenizer needs EOS and PAD ids (and BOS with add_bos)")
    summary_path = Path(str(tokenizer_path) + ".json")
    model_type = "bpe"
    if summary_path.exists():
        model_type = json.loads(summary_path.read_text())["config"]["model_type"]
    info = TokenizerInfo(
        path=TOKENIZER_NAME,
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        vocab_size=sp.get_piece_size(),
        model_type=model_type,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
    )
    return info, model_bytes


def write_shards(
    encoded_parts: Iterable[pa.Table | str | Path],
    out_dir: str | Path,
    cfg: ShardConfig,
    tokenizer_path: str | Path,
    *,
    mixture_target: Mapping[str, float] | None = None,
    source_run: str = "",
) -> Manifest:
    """Reduce: pack, shuffle, split and write all shards + ``manifest.json``; returns it.

    ``mixture_target`` (e.g. ``MixPlan.target_weights``): its keys are used to report the
    achieved mixture (token shares over both splits); without it, shares are per domain.
    """
    out = Path(out_dir)
    tokenizer, model_bytes = tokenizer_info(tokenizer_path, cfg.add_bos)
    dtype = token_dtype(tokenizer.vocab_size)
    bos, eos, pad = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
    write_bytes_atomic(model_bytes, str(out / TOKENIZER_NAME))

    docs = _read(encoded_parts)
    schema = shard_schema(cfg.seq_len, dtype)
    target = dict(mixture_target or {})
    achieved_tokens: dict[str, int] = {}
    splits: dict[str, SplitInfo] = {}
    for split_no, split in enumerate(SPLITS):
        part = docs.filter(pc.equal(docs.column("split"), split))
        packed = _Packed(part, cfg, dtype, bos, eos, pad)
        ids = part.column("id").combine_chunks()
        info = SplitInfo()
        n_rows = packed.rows.shape[0]
        perm = np.random.default_rng([cfg.seed, split_no]).permutation(n_rows)
        for file_no, a in enumerate(range(0, n_rows, cfg.sequences_per_file)):
            rows = perm[a : a + cfg.sequences_per_file]
            data = _ipc_bytes(_table_for_rows(packed, rows, ids, schema))
            rel = f"{split}/shard-{file_no:05d}.arrow"
            write_bytes_atomic(data, str(out / rel))
            tokens = int(packed.row_tokens[rows].sum())
            info.files.append(
                ShardFile(
                    path=rel,
                    sequences=len(rows),
                    tokens=tokens,
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )
        info.sequences = n_rows
        info.tokens = int(packed.row_tokens.sum())
        info.tokens_per_domain = _sum_by(
            part.column("domain").to_pylist(), packed.entry_doc, packed.entry_tokens
        )
        keys = mix_keys(part, target) if target else part.column("domain").to_pylist()
        for k, v in _sum_by(keys, packed.entry_doc, packed.entry_tokens).items():
            achieved_tokens[k] = achieved_tokens.get(k, 0) + v
        splits[split] = info

    total = sum(achieved_tokens.values()) or 1
    manifest = Manifest(
        seq_len=cfg.seq_len,
        dtype=dtype,
        tokenizer=tokenizer,
        splits=splits,
        mixture_target=target,
        mixture_achieved={k: v / total for k, v in sorted(achieved_tokens.items())},
        source_run=source_run,
        seed=cfg.seed,
    )
    write_manifest(manifest, out)
    return manifest
