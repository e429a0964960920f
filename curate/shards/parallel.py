"""The shard writer as several tasks: the same bytes as ``write_shards``, written in parallel.

``write_shards`` holds every token of a split in one process. Here the same shards come from
four steps (``curate.plan`` runs them when ``shards.writers`` > 1):

1. :func:`plan_layout` (one task, token *counts* only: ``id, repeats, split, n_tokens``): the
   stream order of every document copy (``copy_order``) and where its segment starts in its
   split's stream; the rows of each split.
2. :func:`pack_range` (one task per contiguous range of encoded parts): reads its parts'
   tokens, builds their segments (``[BOS] tokens EOS``), cuts them at row boundaries
   (``row_pieces``) and tags every piece with the writer that owns its row: the output files
   (train's, then val's) are cut into ``writers`` contiguous ranges, a row's file is given by
   the seeded row permutation of ``write_shards``.
3. :func:`write_group` (one task per writer): the pieces of its rows from every pack task,
   assembled into rows and written as its shard files (``shard_table``, as ``write_shards``).
4. :func:`assemble_manifest` (one task): the manifest from the plan and the writers' summaries.

Memory per pack or write task is its share of the tokens (plus one split's row permutation);
the plan holds ~25 bytes per document copy. The intermediate pieces are one more copy of the
tokens on disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.mix import mix_keys
from curate.shards.format import Manifest, ShardFile, SplitInfo, TokenizerInfo, shard_schema
from curate.shards.write import (
    SPLITS,
    TOKENIZER_NAME,
    ShardConfig,
    _ipc_bytes,
    copy_order,
    row_pieces,
    shard_table,
    stream_rows,
)

META_COLUMNS = ["id", "repeats", "split", "n_tokens"]
LAYOUT_SCHEMA = pa.schema(
    [
        pa.field("part", pa.int32()),
        pa.field("row", pa.int64()),  # the document's row in its encoded part
        pa.field("split", pa.int8()),
        pa.field("seg_start", pa.int64()),  # where this copy's segment starts in the stream
    ]
)
PIECES_SCHEMA = pa.schema(
    [
        pa.field("writer", pa.int32()),
        pa.field("split", pa.int8()),
        pa.field("pos", pa.int64()),  # the row's position in its split's shuffled rows
        pa.field("start", pa.int32()),  # where the piece starts in the row
        pa.field("doc_id", pa.string()),
        pa.field("offset", pa.int64()),  # offset of its first token in the document's segment
        pa.field("domain", pa.string()),
        pa.field("key", pa.string()),  # the mixture key ("other": no weight)
        pa.field("tokens", pa.large_list(pa.uint32())),
    ]
)


def plan_layout(parts: Sequence[pa.Table], cfg: ShardConfig) -> tuple[pa.Table, dict[str, Any]]:
    """The layout of every document copy (``LAYOUT_SCHEMA``, ordered by part, row) and per
    split its rows, the tokens of its last row when padded (``rem``) and its tokens."""
    part_no = np.concatenate(
        [np.full(t.num_rows, k, np.int32) for k, t in enumerate(parts)] or [np.zeros(0, np.int32)]
    )
    row_no = np.concatenate([np.arange(t.num_rows) for t in parts] or [np.zeros(0, np.int64)])
    meta = pa.concat_tables([t.select(META_COLUMNS) for t in parts]) if parts else None
    split_col = np.asarray(meta.column("split").to_pylist() if meta else [], dtype=object)
    extra = 1 + int(cfg.add_bos)
    columns: list[list[np.ndarray]] = [[], [], [], []]
    summary: dict[str, Any] = {}
    for split_no, split in enumerate(SPLITS):
        rows = np.flatnonzero(split_col == split)
        sub = meta.take(pa.array(rows)) if meta is not None else None
        ids = sub.column("id").to_pylist() if sub is not None else []
        repeats = (
            sub.column("repeats").to_numpy(zero_copy_only=False).astype(np.int64)
            if sub is not None
            else np.zeros(0, np.int64)
        )
        n_tok = (
            sub.column("n_tokens").to_numpy(zero_copy_only=False).astype(np.int64)
            if sub is not None
            else np.zeros(0, np.int64)
        )
        seg_doc = copy_order(ids, repeats, cfg.seed)
        seg_start = np.zeros(len(seg_doc) + 1, dtype=np.int64)
        np.cumsum(n_tok[seg_doc] + extra, out=seg_start[1:])
        n_rows, rem = stream_rows(int(seg_start[-1]), cfg)
        row_len = cfg.seq_len + 1
        summary[split] = {
            "rows": n_rows,
            "rem": rem,
            "tokens": n_rows * row_len - (row_len - rem if rem else 0),
        }
        columns[0].append(part_no[rows][seg_doc])
        columns[1].append(row_no[rows][seg_doc])
        columns[2].append(np.full(len(seg_doc), split_no, np.int8))
        columns[3].append(seg_start[:-1])
    arrays = [np.concatenate(c) for c in columns]
    order = np.lexsort((arrays[1], arrays[0]))  # by part, then row (copies keep stream order)
    layout = pa.Table.from_arrays(
        [pa.array(a[order], f.type) for a, f in zip(arrays, LAYOUT_SCHEMA, strict=True)],
        schema=LAYOUT_SCHEMA,
    )
    return layout, summary


def file_ranges(summary: Mapping[str, Any], cfg: ShardConfig, writers: int) -> list[int]:
    """The first global file (train's files, then val's) of each writer, and the total last."""
    n_files = sum(-(-summary[s]["rows"] // cfg.sequences_per_file) for s in SPLITS)
    return [w * n_files // writers for w in range(writers + 1)]


def _permutation(n_rows: int, cfg: ShardConfig, split_no: int) -> np.ndarray:
    return np.random.default_rng([cfg.seed, split_no]).permutation(n_rows)


def pack_range(
    parts: Mapping[int, pa.Table],
    layout: pa.Table,
    summary: Mapping[str, Any],
    cfg: ShardConfig,
    writers: int,
    special: tuple[int, int],
    mixture_target: Mapping[str, float] | None = None,
) -> pa.Table:
    """The row pieces (``PIECES_SCHEMA``) of the document copies of ``parts`` (part index →
    encoded part), ordered by writer, split, position, start. ``layout``: those parts' rows of
    :func:`plan_layout`'s layout; ``special``: the tokenizer's (BOS, EOS) ids."""
    bos, eos = special
    row_len = cfg.seq_len + 1
    body = int(cfg.add_bos)
    keys = sorted(parts)
    first_row = np.cumsum([0] + [parts[k].num_rows for k in keys])[:-1]
    docs = (
        pa.concat_tables([parts[k].select(["id", "domain", "lang", "tokens"]) for k in keys])
        if keys
        else None
    )
    if docs is None or layout.num_rows == 0:
        return PIECES_SCHEMA.empty_table()
    target = dict(mixture_target or {})
    labels = mix_keys(docs, target) if target else docs.column("domain").to_pylist()
    key = pa.array(["other" if k is None else k for k in labels], pa.string())
    domain = docs.column("domain").combine_chunks()
    ids = docs.column("id").combine_chunks()
    tokens = docs.column("tokens").combine_chunks()
    src_off = tokens.offsets.to_numpy()
    values = tokens.values.to_numpy(zero_copy_only=False)

    # the row of each copy's document in the concatenation of this task's parts
    part_base = np.zeros(max(keys) + 1, np.int64)
    part_base[keys] = first_row
    local = part_base[layout.column("part").to_numpy()] + layout.column("row").to_numpy()
    split_of = layout.column("split").to_numpy()
    seg_start = layout.column("seg_start").to_numpy()
    n_tok = np.diff(src_off)[local]
    seg_len = n_tok + body + 1

    # every segment's content, concatenated: [BOS] tokens EOS
    content_start = np.zeros(len(local) + 1, np.int64)
    np.cumsum(seg_len, out=content_start[1:])
    content = np.empty(int(content_start[-1]), np.uint32)
    tok_seg = np.repeat(np.arange(len(local)), n_tok)
    within = np.arange(len(tok_seg)) - np.repeat(np.cumsum(n_tok) - n_tok, n_tok)
    content[content_start[tok_seg] + body + within] = values[src_off[local[tok_seg]] + within]
    content[content_start[1:] - 1] = eos
    if body:
        content[content_start[:-1]] = bos

    bounds = file_ranges(summary, cfg, writers)
    out: list[pa.Table] = []
    file_base = 0
    for split_no, split in enumerate(SPLITS):
        n_rows = summary[split]["rows"]
        sel = np.flatnonzero(split_of == split_no)
        if n_rows and len(sel):
            inverse = np.empty(n_rows, np.int64)
            inverse[_permutation(n_rows, cfg, split_no)] = np.arange(n_rows)
            starts = seg_start[sel]
            seg, row, start, offset, length = row_pieces(
                starts, starts + seg_len[sel], n_rows, row_len
            )
            pos = inverse[row]
            writer = np.searchsorted(bounds, file_base + pos // cfg.sequences_per_file, "right") - 1
            segment = sel[seg]
            take = np.repeat(content_start[segment] + offset - np.cumsum(length) + length, length)
            flat = content[take + np.arange(int(length.sum()))]
            piece_offsets = np.zeros(len(length) + 1, np.int64)
            np.cumsum(length, out=piece_offsets[1:])
            doc = pa.array(local[segment])
            out.append(
                pa.Table.from_arrays(
                    [
                        pa.array(writer, pa.int32()),
                        pa.array(np.full(len(seg), split_no, np.int8)),
                        pa.array(pos, pa.int64()),
                        pa.array(start, pa.int32()),
                        ids.take(doc),
                        pa.array(offset, pa.int64()),
                        domain.take(doc),
                        key.take(doc),
                        pa.LargeListArray.from_arrays(pa.array(piece_offsets), pa.array(flat)),
                    ],
                    schema=PIECES_SCHEMA,
                )
            )
        file_base += -(-n_rows // cfg.sequences_per_file)
    if not out:
        return PIECES_SCHEMA.empty_table()
    table = pa.concat_tables(out)
    order = pc.sort_indices(
        table,
        [
            ("writer", "ascending"),
            ("split", "ascending"),
            ("pos", "ascending"),
            ("start", "ascending"),
        ],
    )
    return table.take(order)


def write_group(
    pieces: pa.Table, summary: Mapping[str, Any], cfg: ShardConfig, dtype: str, pad: int
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """One writer's shard files (relative path → bytes) from the pieces of its rows (from every
    pack task), and its summary: the files' entries, tokens per split and domain, per key."""
    row_len = cfg.seq_len + 1
    schema = shard_schema(cfg.seq_len, dtype)
    order = pc.sort_indices(
        pieces, [("split", "ascending"), ("pos", "ascending"), ("start", "ascending")]
    )
    pieces = pieces.take(order)
    split_of = pieces.column("split").to_numpy()
    pos = pieces.column("pos").to_numpy()
    files: dict[str, bytes] = {}
    result: dict[str, Any] = {"files": {}, "domains": {}, "keys": {}}
    for split_no, split in enumerate(SPLITS):
        in_split = np.flatnonzero(split_of == split_no)
        if not len(in_split):
            continue
        sub = pieces.take(pa.array(in_split))
        sub_pos = pos[in_split]
        lengths = pc.list_value_length(sub.column("tokens")).to_numpy(zero_copy_only=False)
        lengths = lengths.astype(np.int64)
        spf = cfg.sequences_per_file
        entries: list[dict[str, Any]] = []
        for file_no in np.unique(sub_pos // spf).tolist():
            a = np.searchsorted(sub_pos, file_no * spf)
            b = np.searchsorted(sub_pos, (file_no + 1) * spf)
            n = min(spf, summary[split]["rows"] - file_no * spf)
            file_pos = sub_pos[a:b] - file_no * spf
            length = lengths[a:b]
            start = sub.column("start").slice(a, b - a).to_numpy().astype(np.int64)
            flat = pc.list_flatten(sub.column("tokens").slice(a, b - a)).to_numpy()
            rows = np.full((n, row_len), pad, dtype=dtype)
            place = np.repeat(file_pos * row_len + start - np.cumsum(length) + length, length)
            rows.reshape(-1)[place + np.arange(len(flat))] = flat
            data = _ipc_bytes(
                shard_table(
                    rows,
                    np.bincount(file_pos, minlength=n),
                    sub.column("doc_id").slice(a, b - a).combine_chunks(),
                    start.astype(np.int32),
                    sub.column("offset").slice(a, b - a).to_numpy(),
                    schema,
                )
            )
            rel = f"{split}/shard-{file_no:05d}.arrow"
            files[rel] = data
            tokens = int(length.sum())
            entries.append(
                ShardFile(
                    path=rel,
                    sequences=n,
                    tokens=tokens,
                    sha256=hashlib.sha256(data).hexdigest(),
                ).model_dump(mode="json")
            )
        result["files"][split] = entries
        result["domains"][split] = _sums(sub.column("domain"), lengths)
        for k, v in _sums(sub.column("key"), lengths).items():
            result["keys"][k] = result["keys"].get(k, 0) + v
    return files, result


def _sums(labels: pa.ChunkedArray, lengths: np.ndarray) -> dict[str, int]:
    """Tokens per label."""
    out: dict[str, int] = {}
    for label, n in zip(labels.to_pylist(), lengths.tolist(), strict=True):
        out[label] = out.get(label, 0) + n
    return out


def assemble_manifest(
    summary: Mapping[str, Any],
    writer_results: Sequence[Mapping[str, Any]],
    cfg: ShardConfig,
    tokenizer: TokenizerInfo,
    dtype: str,
    mixture_target: Mapping[str, float] | None = None,
    source_run: str = "",
) -> Manifest:
    """The manifest ``write_shards`` writes, from the plan's summary and every writer's."""
    splits: dict[str, SplitInfo] = {}
    achieved: dict[str, int] = {}
    for split in SPLITS:
        info = SplitInfo(sequences=summary[split]["rows"], tokens=summary[split]["tokens"])
        domains: dict[str, int] = {}
        for result in writer_results:
            info.files += [ShardFile(**f) for f in result["files"].get(split, [])]
            for k, v in result["domains"].get(split, {}).items():
                domains[k] = domains.get(k, 0) + v
        info.tokens_per_domain = {k: v for k, v in sorted(domains.items()) if v}
        splits[split] = info
    for result in writer_results:
        for k, v in result["keys"].items():
            achieved[k] = achieved.get(k, 0) + v
    total = sum(achieved.values()) or 1
    return Manifest(
        seq_len=cfg.seq_len,
        dtype=dtype,  # type: ignore[arg-type]
        tokenizer=tokenizer,
        splits=splits,
        mixture_target=dict(mixture_target or {}),
        mixture_achieved={k: v / total for k, v in sorted(achieved.items()) if v},
        source_run=source_run,
        seed=cfg.seed,
    )


__all__ = [
    "LAYOUT_SCHEMA",
    "PIECES_SCHEMA",
    "TOKENIZER_NAME",
    "assemble_manifest",
    "file_ranges",
    "pack_range",
    "plan_layout",
    "write_group",
]
