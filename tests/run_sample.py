"""Build a small but complete run directory from real sample documents, for report/safety tests.

Stages (real code, real data): ``toxicity`` and ``pii`` (curate/filters), then ``near_dedup``
(curate/dedup/minhash.py: map, reduce, apply; the llvm-13..16 docs in data/sample are real
near-duplicates), which adds ``minhash_cluster`` and removes ``near_duplicate``. Then mixture (curate/mix), a SentencePiece tokenizer
(curate/tokenizer) and token shards (curate/shards/write) under ``<run>/shards``. The layout is
the one the flow writes: ``<run>/<stage>/part-NNNNN{.parquet,.removed.parquet,
.quarantine.parquet,.done.json}`` and ``<run>/stats.json``.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pyarrow as pa

from curate import mix
from curate.dedup.minhash import NEAR_DEDUP, NearDedupConfig
from curate.filters.pii import PII, PIIConfig
from curate.filters.toxicity import TOXICITY, ToxicityConfig
from curate.layout import RunLayout
from curate.report import stage_counts
from curate.schema import doc_id, docs_table
from curate.shards.write import ShardConfig, encode_part, write_shards
from curate.stage import StageResult, StageStats
from curate.storage import config_hash, parquet_bytes, write_bytes_atomic, write_json_atomic
from curate.tokenizer import TokenizerConfig, train_tokenizer
from tests.shards_sample import SAMPLE, sample_docs, split_parts

N_PARTS = 3
SEQ_LEN = 128


def changelog_docs() -> pa.Table:
    """Debian changelogs (real names and e-mails) from data/sample/meta, ~4 kB blocks each."""
    rows = []
    for p in sorted((SAMPLE / "meta").rglob("changelog*")):
        text = gzip.decompress(p.read_bytes()).decode("utf-8", errors="replace")
        blocks, cur = [], ""
        for entry in re.split(r"(?<=\n)(?=\S)", text):  # a changelog entry starts at column 0
            cur += entry
            if len(cur) > 4000:
                blocks.append(cur)
                cur = ""
        if cur.strip():
            blocks.append(cur)
        rel = str(p.relative_to(SAMPLE))
        for i, b in enumerate(blocks):
            rows.append(
                {
                    "id": doc_id(rel, i),
                    "text": b,
                    "source": rel,
                    "offset": i,
                    "domain": "meta",
                    "format": "text",
                    "lang": "en",
                    "lang_score": None,
                }
            )
    return docs_table(rows)


def real_emails() -> set[str]:
    """Every e-mail address written in the sample changelogs (what must not reach shards)."""
    from curate.filters.pii import EMAIL

    found: set[str] = set()
    for p in (SAMPLE / "meta").rglob("changelog*"):
        text = gzip.decompress(p.read_bytes()).decode("utf-8", errors="replace")
        found.update(m.group(0) for m in EMAIL.finditer(text))
    return found


def input_docs(fortune_every: int = 8) -> pa.Table:
    base = sample_docs(("rst", "code", "prose"))
    fortunes = sample_docs(("fortune",))
    fortunes = fortunes.take(list(range(0, fortunes.num_rows, fortune_every)))
    return pa.concat_tables([base, fortunes, changelog_docs()])


def write_table(table: pa.Table, url: str) -> None:
    write_bytes_atomic(parquet_bytes(table), url)


def _write_part(run: str, stage: str, index: int, result: StageResult, cfg_hash: str) -> None:
    layout = RunLayout(run)
    for kind, table in zip(
        ("kept", "removed", "quarantine"),
        (result.kept, result.removed, result.quarantine),
        strict=True,
    ):
        write_table(table, layout.part(stage, index, kind))
    write_json_atomic(
        {
            "input_fingerprint": f"test-{stage}-{index}",
            "config_hash": cfg_hash,
            "stats": result.stats.to_dict(),
        },
        layout.marker(stage, index),
    )


def build_run(run: Path, pii: bool = True, shards: bool = True) -> dict:
    """Write a run into ``run``; returns what the tests compare against."""
    run_url = str(run)
    layout = RunLayout(run_url)
    parts = split_parts(input_docs(), N_PARTS)
    stats: list[StageStats] = []
    stage_list = [(TOXICITY, ToxicityConfig())] + ([(PII, PIIConfig())] if pii else [])
    names = [s.name for s, _ in stage_list] + [NEAR_DEDUP.name]
    # what a run writes first: its config (the stage order) and its parts
    write_json_atomic({"config": {"stages": [{"name": n} for n in names]}}, layout.config)
    write_json_atomic({"parts": [[] for _ in parts]}, layout.parts)
    for stage, cfg in stage_list:
        total = None
        out = []
        for i, part in enumerate(parts):
            res = stage.run(part, cfg)
            _write_part(run_url, stage.name, i, res, config_hash(cfg))
            out.append(res.kept)
            total = res.stats if total is None else total.merge(res.stats)
        stats.append(total)
        parts = out
    # near_dedup, the real GlobalStage: signatures per part, LSH + clusters once, decide per part
    ncfg = NearDedupConfig()
    map_urls = []
    for i, part in enumerate(parts):
        url = layout.map_part(NEAR_DEDUP.name, i)
        write_table(NEAR_DEDUP.map(part, ncfg), url)
        map_urls.append(url)
    state = NEAR_DEDUP.reduce(map_urls, ncfg)
    total = None
    out = []
    for i, part in enumerate(parts):
        res = NEAR_DEDUP.run(part, state, ncfg)
        _write_part(run_url, NEAR_DEDUP.name, i, res, config_hash(ncfg))
        out.append(res.kept)
        total = res.stats if total is None else total.merge(res.stats)
    stats.append(total)
    parts = out
    write_json_atomic({"stages": {s.stage: stage_counts(s) for s in stats}}, layout.stats)
    info: dict = {"stats": stats, "final_parts": parts}
    if not shards:
        return info
    mcfg = mix.MixConfig(weights={"rst": 2, "code": 1, "prose": 2, "fortune": 2, "meta": 1})
    available = mix.sum_counts(mix.available_tokens(p, mcfg) for p in parts)
    plan = mix.plan_mixture(available, mcfg, mix.token_source(parts[0], mcfg.bytes_per_token))
    mixed = [mix.apply_mixture(p, plan) for p in parts]
    achieved = mix.sum_counts(mix.selected_tokens(p, plan) for p in mixed)
    report = mix.mixture_report(plan, achieved)
    write_json_atomic(report, layout.report_file("mixture.json"))
    tok = train_tokenizer(
        mixed,
        TokenizerConfig(vocab_size=1000, sample_bytes=400_000, num_threads=1),
        layout.tokenizer_model,
    )
    scfg = ShardConfig(seq_len=SEQ_LEN, sequences_per_file=2000, val_fraction=0.05)
    encoded = [encode_part(p, tok, scfg) for p in mixed]
    manifest = write_shards(
        encoded,
        layout.shards_dir,
        scfg,
        tok,
        mixture_target=plan.target_weights,
        source_run=run.name,
    )
    info.update(mixture=report, tokenizer=tok, manifest=manifest, mixed=mixed)
    return info


def small_flow_config(tmp: Path, name: str, stages: list[str]):
    """A small real curation job for flow tests: code, rst (llvm 13..16: near-duplicates) and
    Debian changelogs (real e-mails) through ``stages``, on a 1-CPU Ray, no retries. Inputs are
    named relative to the repository (with ``base_dir``), so document ids, and with them the
    mix and the shards, do not depend on where the checkout lives."""
    from curate.config import load_config

    stage_lines = "".join(f"  - {{name: {s}, options: {{}}}}\n" for s in stages)
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"""name: {name}
run_dir: {tmp}/runs/{name}
inputs:
  - {{path: data/sample/code, base_dir: {SAMPLE.parents[1]}, format: code, domain: code}}
  - {{path: data/sample/rst, base_dir: {SAMPLE.parents[1]}, format: text, domain: rst}}
  - {{path: data/sample/meta, base_dir: {SAMPLE.parents[1]}, format: text, domain: meta}}
parts: {{files_per_part: 40, bytes_per_part: 3000000}}
stages:
{stage_lines}mix: {{weights: {{rst: 1, code: 1, meta: 2}}, total_tokens: 400000, max_epochs: 3}}
tokenizer: {{vocab_size: 800, sample_bytes: 300000, num_threads: 1}}
shards: {{seq_len: 128, sequences_per_file: 4096, val_fraction: 0.05}}
ray: {{num_cpus: 1, object_store_memory: 100000000}}
prefect: {{task_retries: 0, start_server: false}}
"""
    )
    return load_config(path)
