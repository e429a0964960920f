"""SentencePiece tokenizer trained on a sample drawn from the mixture.

The sample: every document is drawn with probability ``p × repeats`` (``repeats`` from
``curate.mix.apply_mixture``, 1 when absent) by a stable hash of its id, with ``p`` chosen so the
expected sample is ``sample_bytes``; so domains enter in their mixture proportions, not in
their raw sizes. Documents are fed in hash order (independent of part order) and cut at line
ends into pieces of at most ``max_sentence_bytes`` (SentencePiece skips longer "sentences").
Newlines stay inside the pieces, so the model learns tokens such as ``":\\n"`` or ``"\\n\\n"``.

Normalisation keeps text byte-exact (code needs its whitespace): rule ``identity`` (no NFKC),
``remove_extra_whitespaces=False``, ``add_dummy_prefix=False``, whitespace-only pieces
allowed (indentation), digits split, byte fallback on (no <unk> for unseen characters): so
``decode(encode(text)) == text`` for any UTF-8 text. Special ids are fixed: PAD 0, BOS 1, EOS 2,
UNK 3. The result is a plain ``.model`` file that ``sentencepiece`` loads on its own.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sentencepiece as spm
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from curate.mix import stable_uniform
from curate.schema import doc_id
from curate.storage import local_copy, write_bytes_atomic, write_json_atomic

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


SPECIAL_PIECES = 4  # PAD, BOS, EOS, UNK
BYTE_PIECES = 256  # byte_fallback adds one piece per byte value
MAX_VOCAB_SIZE = 1 << 20


class TokenizerConfig(BaseModel):
    """SentencePiece settings, checked up front (never after curation ran)."""

    model_config = ConfigDict(extra="forbid")
    byte_fallback: bool = True  # before vocab_size: its check reads it
    vocab_size: int = Field(32000, le=MAX_VOCAB_SIZE)
    model_type: Literal["bpe", "unigram"] = "bpe"
    split_digits: bool = True
    character_coverage: float = Field(0.9995, gt=0, le=1)
    sample_bytes: int = Field(64_000_000, ge=1)  # expected size of the training sample
    max_sentence_bytes: int = Field(8192, ge=4)  # one UTF-8 character takes up to 4 bytes
    seed: int = 0
    num_threads: int = Field(2, ge=1)
    # a given SentencePiece model (local path or URL): the run's tokenizer step copies it
    # instead of training one (``sluice ablate``: one tokenizer for every variant)
    model_path: str | None = None

    @model_serializer(mode="wrap")
    def _without_unset_model(self, handler: Any) -> dict[str, Any]:
        """No ``model_path`` key when none is given: a trained tokenizer's config (and hash,
        and every existing run's ``config.json``) stays what it was before the key existed."""
        data = handler(self)
        if self.model_path is None and isinstance(data, dict):
            data.pop("model_path", None)
        return data

    @field_validator("vocab_size")
    @classmethod
    def _vocab(cls, v: int, info: ValidationInfo) -> int:
        fallback = info.data.get("byte_fallback", True)
        least = SPECIAL_PIECES + (BYTE_PIECES if fallback else 0) + 1
        if v < least:
            pieces = f"{SPECIAL_PIECES} special{' + 256 byte' if fallback else ''} pieces + 1"
            raise ValueError(f"{v} is too small: at least {least} ({pieces})")
        return v


DocsInput = Iterable[pa.Table | str | Path] | pa.Table


def _tables(docs: DocsInput, columns: list[str]) -> Iterator[pa.Table]:
    """Tables from tables or parquet paths (only ``columns`` that exist are read)."""
    if isinstance(docs, pa.Table):
        docs = [docs]
    for d in docs:
        if isinstance(d, pa.Table):
            yield d.select([c for c in columns if c in d.column_names])
        else:
            names = pq.read_schema(d).names
            yield pq.read_table(d, columns=[c for c in columns if c in names])


def texts_table(texts: Iterable[str]) -> pa.Table:
    """Plain texts as a minimal table (id = hash of the text's position)."""
    texts = list(texts)
    return pa.table(
        {
            "id": [doc_id("text", i) for i in range(len(texts))],
            "text": pa.array(texts, pa.large_string()),
        }
    )


def _weights(t: pa.Table) -> np.ndarray:
    if "repeats" in t.column_names:
        return t.column("repeats").to_numpy(zero_copy_only=False).astype(np.float64)
    return np.ones(t.num_rows)


def sample_probability(docs: DocsInput, cfg: TokenizerConfig) -> float:
    """p such that Σ bytes × repeats × p ≈ ``sample_bytes`` (pass 1 over the parts)."""
    total = 0.0
    for t in _tables(docs, ["text", "repeats"]):
        nbytes = pc.binary_length(t.column("text").cast(pa.large_binary()))
        total += float(np.dot(nbytes.to_numpy(zero_copy_only=False), _weights(t)))
    return min(1.0, cfg.sample_bytes / total) if total else 1.0


def in_sample(t: pa.Table, p: float, seed: int) -> np.ndarray:
    """Mask of the rows drawn into the training sample (the rest is held out)."""
    u = stable_uniform(t.column("id").to_pylist(), seed, "tokenizer")
    return u < p * _weights(t)


def split_sentences(text: str, max_bytes: int) -> list[str]:
    """Cut a document at line ends into pieces of at most ``max_bytes`` UTF-8 bytes
    (``max_bytes`` >= 4: one character takes up to 4 bytes)."""
    if max_bytes < 4:
        raise ValueError(f"max_bytes must be at least 4, got {max_bytes}")
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode())
        if size + n > max_bytes and cur:
            out.append("".join(cur))
            cur, size = [], 0
        while n > max_bytes:  # one huge line: hard cut (by characters, bytes bounded)
            head = line[: max_bytes // 4]
            out.append(head)
            line = line[len(head) :]
            n = len(line.encode())
        cur.append(line)
        size += n
    if cur:
        out.append("".join(cur))
    return out


def training_sample(docs: DocsInput, cfg: TokenizerConfig) -> tuple[list[str], dict]:
    """The training sentences (deterministic order) and a summary of the sample."""
    if not isinstance(docs, pa.Table):
        docs = list(docs)
    p = sample_probability(docs, cfg)
    keyed: list[tuple[float, str, str]] = []
    per_domain: dict[str, int] = {}
    for t in _tables(docs, ["id", "text", "repeats", "domain"]):
        mask = in_sample(t, p, cfg.seed)
        picked = t.filter(pa.array(mask))
        u = stable_uniform(picked.column("id").to_pylist(), cfg.seed, "tokenizer-order")
        domains = (
            picked.column("domain").to_pylist()
            if "domain" in picked.column_names
            else [""] * picked.num_rows
        )
        for ui, i, text, d in zip(
            u.tolist(),
            picked.column("id").to_pylist(),
            picked.column("text").to_pylist(),
            domains,
            strict=True,
        ):
            keyed.append((ui, i, text))
            per_domain[d] = per_domain.get(d, 0) + len(text.encode())
    keyed.sort()
    sentences = [s for _, _, text in keyed for s in split_sentences(text, cfg.max_sentence_bytes)]
    summary = {
        "probability": p,
        "documents": len(keyed),
        "bytes": sum(per_domain.values()),
        "bytes_per_domain": dict(sorted(per_domain.items())),
    }
    return sentences, summary


def train_tokenizer(docs: DocsInput | list[str], cfg: TokenizerConfig, out_path: str) -> str:
    """Train on a mixture sample of ``docs`` and write ``out_path`` (+ ``.json`` summary).

    ``docs``: document tables or parquet part paths (with ``id``, ``text``, optionally
    ``repeats`` and ``domain``), or a list of plain strings.
    """
    plain = isinstance(docs, list) and docs and all(isinstance(d, str) for d in docs)
    if plain and not any(Path(d).suffix == ".parquet" for d in docs):
        docs = texts_table(docs)
    sentences, summary = training_sample(docs, cfg)
    if not sentences:
        raise ValueError("empty tokenizer training sample")
    spm.set_random_generator_seed(cfg.seed)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=cfg.vocab_size,
        model_type=cfg.model_type,
        byte_fallback=cfg.byte_fallback,
        split_digits=cfg.split_digits,
        character_coverage=cfg.character_coverage,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        max_sentence_length=cfg.max_sentence_bytes,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        pad_id=PAD_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        num_threads=cfg.num_threads,
        minloglevel=2,
    )
    write_bytes_atomic(model.getvalue(), out_path)
    summary["config"] = cfg.model_dump()
    write_json_atomic(summary, out_path + ".json")
    return out_path


def load_tokenizer(path: str | Path) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model from a local path or any fsspec URL."""
    return spm.SentencePieceProcessor(model_file=local_copy(str(path)))


def bytes_per_token(
    sp: spm.SentencePieceProcessor, texts: list[str], num_threads: int = 1
) -> float:
    """UTF-8 bytes per token over ``texts`` (no BOS/EOS): :func:`byte_and_token_counts`."""
    n_bytes, n_tokens = byte_and_token_counts(sp, texts, num_threads)
    return n_bytes / n_tokens if n_tokens else float("nan")


def byte_and_token_counts(
    sp: spm.SentencePieceProcessor, texts: list[str], num_threads: int = 1
) -> tuple[int, int]:
    """UTF-8 bytes and tokens (no BOS/EOS) of ``texts``, encoded 64 texts at a time (the
    token lists of a thousand long documents at once are hundreds of MB of Python ints)."""
    n_bytes = sum(len(t.encode()) for t in texts)
    n_tokens = sum(
        len(ids)
        for k in range(0, len(texts), 64)
        for ids in sp.encode(texts[k : k + 64], num_threads=num_threads)
    )
    return n_bytes, n_tokens


HF_TOKENIZER_FILE = "tokenizer.json"


def export_hf_tokenizer(model_path: str | Path, out_path: str | Path) -> str:
    """Write a SentencePiece model as a Hugging Face ``tokenizers`` file (``tokenizer.json``,
    for ``PreTrainedTokenizerFast(tokenizer_file=...)``) that encodes as the model does:
    transformers' own converter (``SpmConverter.build_tokenizer_from_spm_proto``) follows the
    model's normalizer spec, BPE merges ranked by piece score, and byte fallback. Needs the
    ``hf`` extra (``pip install 'sluice[hf]'``)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
        from transformers.convert_slow_tokenizer import SpmConverter
    except ImportError as e:
        raise RuntimeError(
            f"exporting a tokenizer.json needs transformers: pip install 'sluice[hf]' ({e})"
        ) from None
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(local_copy(str(model_path))).read_bytes())
    if proto.trainer_spec.model_type != 2:  # 2: BPE (the converter's unigram path needs scores)
        vocab: Any = [(p.piece, p.score) for p in proto.pieces]
    else:
        vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    tokenizer = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    if tokenizer is None:
        raise RuntimeError(f"{model_path}: cannot convert this SentencePiece model")
    with tempfile.TemporaryDirectory(prefix="sluice-hf-") as tmp:
        tokenizer.save(f"{tmp}/{HF_TOKENIZER_FILE}")
        write_bytes_atomic(Path(f"{tmp}/{HF_TOKENIZER_FILE}").read_bytes(), str(out_path))
    return str(out_path)
