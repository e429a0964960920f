"""The steps of a run, as plain functions over the run directory (no Prefect, no Ray).

flows/ calls these as tasks (one per part, or one per reduce); :func:`run_pipeline` calls them
in-process in order. Every step writes its outputs atomically and then a done marker holding
its input fingerprint, its config hash and its counters; a step whose marker matches is
skipped. So a rerun of a finished run does no work, and a run killed in the middle finishes the
rest on rerun with byte-identical outputs (every step is deterministic).

Run directory (``cfg.run_url``)::

    config.json                      the resolved config (+ hash)
    parts.json                       the input files of every part
    extract/part-NNNNN.parquet       kept documents (DOC_SCHEMA + score columns)
            part-NNNNN.removed.parquet     removed documents + removed_by + reason
            part-NNNNN.quarantine.parquet  QUARANTINE_SCHEMA
            part-NNNNN.done.json           marker: input_fingerprint, config_hash, stats, output
    <stage>/...                      the same for every configured stage, in order
    quality/model.bin, quality_stats.json (+ train.done.json)   the run's own quality model
                                     (when the quality stage has no model_path)
    <global stage>/map/part-NNNNN.parquet (+ .done.json)   per-part summaries
                  /state.parquet (+ state.done.json)      the reduce's state table
    mix/plan.json (+ plan.done.json), mix/part-NNNNN.parquet (selected docs + repeats)
    tokenizer/tokenizer.model (+ .json summary, done.json)
    encoded/part-NNNNN.parquet       token ids per document (curate.shards.write.ENCODED_SCHEMA)
    shards/manifest.json, shards/{train,val}/shard-NNNNN.arrow, shards/tokenizer.model
    stats.json, timings.json, funnel.md, funnel.png, mixture.{json,md,png}   (curate.report)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from curate import mix
from curate.config import EXTRACT_STAGE, PipelineConfig
from curate.progress import progress
from curate.readers import extract_part, list_inputs, plan_parts, skipped_report
from curate.shards.write import encode_part, write_shards
from curate.stage import ConservationError, GlobalStage, StageResult, StageStats
from curate.stages import STAGES, load_plugins
from curate.storage import (
    PARQUET_OPTIONS,
    config_hash,
    done_marker_matches,
    exists,
    filesystem,
    fingerprint,
    join,
    local_copy,
    name_bytes,
    part_name,
    read_json,
    read_parquet,
    write_bytes_atomic,
    write_json_atomic,
)
from curate.tokenizer import train_tokenizer

TOKENIZER_FILE = "tokenizer.model"


# --- paths -------------------------------------------------------------------------------------


def stage_dir(cfg: PipelineConfig, stage: str) -> str:
    return join(cfg.run_url, stage)


def part_url(cfg: PipelineConfig, stage: str, index: int, kind: str = "") -> str:
    """``<run>/<stage>/part-NNNNN[.kind].parquet`` (kind: "", "removed", "quarantine")."""
    suffix = f".{kind}" if kind else ""
    return join(stage_dir(cfg, stage), f"{part_name(index)}{suffix}.parquet")


def marker_url(cfg: PipelineConfig, stage: str, index: int) -> str:
    return join(stage_dir(cfg, stage), f"{part_name(index)}.done.json")


def stage_names(cfg: PipelineConfig) -> list[str]:
    """The document stages of the run in order: extract, then the configured ones."""
    return [EXTRACT_STAGE, *(s.name for s in cfg.stages)]


def final_stage(cfg: PipelineConfig) -> str:
    return stage_names(cfg)[-1]


# --- helpers -----------------------------------------------------------------------------------


def _digest(*items: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for item in items:
        h.update(name_bytes(item))  # a url may hold a file name that is not UTF-8
        h.update(b"\x00")
    return h.hexdigest()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return sink.getvalue().to_pybytes()


def _write_table(table: pa.Table, url: str) -> str:
    """Write ``table`` atomically; returns the sha256 of the bytes written."""
    data = parquet_bytes(table)
    write_bytes_atomic(data, url)
    return hashlib.sha256(data).hexdigest()


@functools.cache
def _module_source_hash(module_name: str) -> str:
    """Hash of a module's source (of every .py file of a package); its name if unreadable."""
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    h = hashlib.blake2b(module_name.encode(), digest_size=16)
    if hasattr(module, "__path__"):  # a package: all its files
        files = sorted(f for d in module.__path__ for f in Path(d).rglob("*.py"))
    else:
        files = [Path(module.__file__)] if getattr(module, "__file__", None) else []
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def code_version(*objects: Any) -> str:
    """Fingerprint of the code a step runs: the sources of the modules (or packages) that
    define ``objects`` (functions or module names). Part of every marker's config hash, so
    editing a stage re-runs it (and, where its output changes, what comes after)."""
    names = set()
    for obj in objects:
        if obj is None:
            continue
        names.add(obj if isinstance(obj, str) else obj.__module__)
    return _digest(*(_module_source_hash(n) for n in sorted(names)))


def is_local(url: str) -> bool:
    """True when ``url`` is on the local filesystem (a path or file://)."""
    fs, _ = filesystem(url)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols


def _plain(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def _marker(url: str) -> dict[str, Any]:
    return read_json(url)


def _output_hash(cfg: PipelineConfig, stage: str, index: int) -> str:
    """The hash of a finished part's kept output (the next stage's input fingerprint)."""
    url = marker_url(cfg, stage, index)
    if not exists(url):
        raise RuntimeError(f"stage {stage!r} part {index} has not run (no {url})")
    return _marker(url)["output"]


def _skip(url: str, input_fp: str, cfg_hash: str) -> dict[str, Any] | None:
    """The marker's stats when the step at ``url`` is done for these inputs, else None."""
    if done_marker_matches(url, input_fp, cfg_hash):
        marker = _marker(url)
        return {**marker["stats"], "skipped": True}
    return None


def _finish_part(
    cfg: PipelineConfig,
    stage: str,
    index: int,
    result: StageResult,
    input_fp: str,
    cfg_hash: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write kept/removed/quarantine atomically, then the marker; returns the counters."""
    result.stats.check()
    output = _write_table(result.kept, part_url(cfg, stage, index))
    _write_table(result.removed, part_url(cfg, stage, index, "removed"))
    _write_table(result.quarantine, part_url(cfg, stage, index, "quarantine"))
    stats = result.stats.to_dict()
    write_json_atomic(
        {
            "input_fingerprint": input_fp,
            "config_hash": cfg_hash,
            "output": output,
            "stats": stats,
            **(extra or {}),
        },
        marker_url(cfg, stage, index),
    )
    return {**stats, "skipped": False}


# --- planning ----------------------------------------------------------------------------------


def plan_run(cfg: PipelineConfig) -> list[list[Any]]:
    """List the inputs and cut them into parts; writes ``config.json`` and ``parts.json``."""
    skipped: list[Any] = []
    files = list_inputs(cfg.inputs, cfg.domain_rules, skipped)
    if not files:
        raise ValueError(f"no input files found for {[s.path for s in cfg.inputs]}")
    parts = plan_parts(files, cfg.parts.files_per_part, cfg.parts.bytes_per_part)
    write_json_atomic(
        {"hash": cfg.hash(), "config": cfg.model_dump(mode="json")},
        join(cfg.run_url, "config.json"),
    )
    write_json_atomic(
        {
            "parts": [[_plain(f) for f in part] for part in parts],
            "skipped": skipped_report(skipped),
        },
        join(cfg.run_url, "parts.json"),
    )
    return parts


# --- document stages ---------------------------------------------------------------------------


def run_extract_part(cfg: PipelineConfig, part_index: int, files: list[Any]) -> dict[str, Any]:
    """Extract one part of raw files into documents (stage ``extract``)."""
    urls = [f.url for f in files]
    input_fp = _digest(
        fingerprint(urls), *(f"{f.url}|{f.name}|{f.format}|{f.domain}" for f in files)
    )
    cfg_hash = _digest(config_hash(cfg.extract), code_version("curate.readers"))
    done = _skip(marker_url(cfg, EXTRACT_STAGE, part_index), input_fp, cfg_hash)
    if done:
        return done
    start = time.perf_counter()
    result = extract_part(files, cfg.extract)
    result.stats.seconds = time.perf_counter() - start
    counters = dict(sorted(getattr(result, "counters", {}).items()))
    return _finish_part(
        cfg, EXTRACT_STAGE, part_index, result, input_fp, cfg_hash, {"counters": counters}
    )


def _stage_setup(cfg: PipelineConfig, stage_index: int) -> tuple[Any, BaseModel, str, str]:
    entry = cfg.stages[stage_index]
    stage_cfg = cfg.stage_config(stage_index)  # imports cfg.plugins first
    stage = STAGES[entry.name]
    code = code_version(*(getattr(stage, f, None) for f in ("score", "rules", "map", "reduce")))
    options = stage_cfg.model_dump(mode="json")
    extra: dict[str, str] = {}
    if entry.name == QUALITY_STAGE and getattr(stage_cfg, "model_path", "") is None:
        stage_cfg, extra = _with_run_model(cfg, stage_cfg)
    cfg_hash = config_hash({"stage": entry.name, "options": options, "code": code, **extra})
    previous = stage_names(cfg)[stage_index]  # extract is at 0, stages start at 1
    return stage, stage_cfg, cfg_hash, previous


# --- the run's own quality model (a reduce after extract) ---------------------------------------

QUALITY_STAGE = "quality"
QUALITY_MODEL_FILE = "model.bin"


def quality_training_stage(cfg: PipelineConfig) -> int | None:
    """Index of the ``quality`` stage when it has no ``model_path`` (the run trains its
    model), else None."""
    for k, entry in enumerate(cfg.stages):
        if entry.name == QUALITY_STAGE and cfg.stage_config(k).model_path is None:  # type: ignore[attr-defined]
            return k
    return None


def quality_model_url(cfg: PipelineConfig) -> str:
    return join(stage_dir(cfg, QUALITY_STAGE), QUALITY_MODEL_FILE)


def quality_stats_url(cfg: PipelineConfig) -> str:
    from curate.filters.quality import STATS_FILE

    return join(stage_dir(cfg, QUALITY_STAGE), STATS_FILE)


def _quality_train_marker(cfg: PipelineConfig) -> str:
    return join(stage_dir(cfg, QUALITY_STAGE), "train.done.json")


def run_quality_train(cfg: PipelineConfig, n_parts: int) -> dict[str, Any]:
    """Reduce: train the ``quality`` stage's model on the run's extracted documents (positives
    by source pattern, negatives by domain: ``options.train``) when its ``model_path`` is unset;
    writes ``<run>/quality/model.bin`` and ``quality_stats.json`` atomically, then a done
    marker. Deterministic (one thread, fixed seed, in a child interpreter), so a rerun skips or
    gives the same bytes. Returns ``{"trained": False}`` when the run needs no model."""
    from curate.filters.quality import MODEL_FILE, STATS_FILE, train_quality_model, training_texts

    k = quality_training_stage(cfg)
    if k is None:
        return {"trained": False, "skipped": True}
    train_cfg = cfg.stage_config(k).train  # type: ignore[attr-defined]
    input_fp = _digest(*(_output_hash(cfg, EXTRACT_STAGE, i) for i in range(n_parts)))
    cfg_hash = _digest(config_hash(train_cfg), code_version("curate.filters.quality"))
    url = _quality_train_marker(cfg)
    if done_marker_matches(url, input_fp, cfg_hash):
        return {**_marker(url)["stats"], "skipped": True}
    start = time.perf_counter()
    docs = pa.concat_tables(
        _read_columns(part_url(cfg, EXTRACT_STAGE, i), ["text", "source", "domain"])
        for i in range(n_parts)
    )
    positives, negatives = training_texts(docs, train_cfg)
    with tempfile.TemporaryDirectory(prefix="sluice-quality-") as tmp:
        result = train_quality_model(positives, negatives, tmp, train_cfg.params)
        model = Path(tmp, MODEL_FILE).read_bytes()
        write_bytes_atomic(model, quality_model_url(cfg))
        write_bytes_atomic(Path(tmp, STATS_FILE).read_bytes(), quality_stats_url(cfg))
    stats = {
        "trained": True,
        "documents": result["documents"],
        "train_examples": result["train_examples"],
        "held_out_examples": result["held_out_examples"],
        "held_out": result["held_out"],
        "seconds": time.perf_counter() - start,
    }
    write_json_atomic(
        {
            "input_fingerprint": input_fp,
            "config_hash": cfg_hash,
            "output": hashlib.sha256(model).hexdigest(),
            "stats": stats,
        },
        url,
    )
    return {**stats, "skipped": False}


def _with_run_model(cfg: PipelineConfig, stage_cfg: BaseModel) -> tuple[BaseModel, dict[str, str]]:
    """The quality stage's config with the run's trained model filled in, and the model's hash
    for the stage's config hash (a retrained model re-runs the stage; its path does not)."""
    marker = _quality_train_marker(cfg)
    if not exists(marker):
        raise RuntimeError(f"quality: no model_path and the run's model is not trained ({marker})")
    digest = _marker(marker)["output"]  # the quality stage reads remote models via local_copy
    return stage_cfg.model_copy(update={"model_path": quality_model_url(cfg)}), {"model": digest}


def run_stage_part(cfg: PipelineConfig, stage_index: int, part_index: int) -> dict[str, Any]:
    """Run per-part stage ``cfg.stages[stage_index]`` on one part of the previous stage."""
    stage, stage_cfg, cfg_hash, previous = _stage_setup(cfg, stage_index)
    if isinstance(stage, GlobalStage):
        raise TypeError(f"stage {stage.name!r} is global: use run_global_map/reduce/apply")
    input_fp = _output_hash(cfg, previous, part_index)
    done = _skip(marker_url(cfg, stage.name, part_index), input_fp, cfg_hash)
    if done:
        return done
    table = read_parquet(part_url(cfg, previous, part_index))
    result = stage.run(table, stage_cfg)
    return _finish_part(cfg, stage.name, part_index, result, input_fp, cfg_hash)


def map_url(cfg: PipelineConfig, stage: str, index: int, marker: bool = False) -> str:
    name = f"{part_name(index)}.done.json" if marker else f"{part_name(index)}.parquet"
    return join(stage_dir(cfg, stage), "map", name)


def state_url(cfg: PipelineConfig, stage: str, marker: bool = False) -> str:
    return join(stage_dir(cfg, stage), "state.done.json" if marker else "state.parquet")


def _table_step(
    marker: str, output_url: str, input_fp: str, cfg_hash: str, compute: Callable[[], pa.Table]
) -> dict[str, Any]:
    """A map or reduce step: skipped when its done marker matches these inputs, else the table is
    computed and written, then the marker."""
    done = _skip(marker, input_fp, cfg_hash)
    if done:
        return done
    start = time.perf_counter()
    table = compute()
    output = _write_table(table, output_url)
    stats = {"rows": table.num_rows, "seconds": time.perf_counter() - start}
    write_json_atomic(
        {"input_fingerprint": input_fp, "config_hash": cfg_hash, "output": output, "stats": stats},
        marker,
    )
    return {**stats, "skipped": False}


def run_global_map(cfg: PipelineConfig, stage_index: int, part_index: int) -> dict[str, Any]:
    """Map of a global stage over one part: its summary table (signatures, hashes)."""
    stage, stage_cfg, cfg_hash, previous = _stage_setup(cfg, stage_index)
    input_fp = _output_hash(cfg, previous, part_index)
    return _table_step(
        map_url(cfg, stage.name, part_index, marker=True),
        map_url(cfg, stage.name, part_index),
        input_fp,
        cfg_hash,
        lambda: stage.map(read_parquet(part_url(cfg, previous, part_index)), stage_cfg),
    )


def run_global_reduce(cfg: PipelineConfig, stage_index: int, n_parts: int) -> dict[str, Any]:
    """Reduce of a global stage: all map outputs (in part order) → ``state.parquet``."""
    stage, stage_cfg, cfg_hash, _ = _stage_setup(cfg, stage_index)
    inputs = [_marker(map_url(cfg, stage.name, i, marker=True))["output"] for i in range(n_parts)]
    input_fp = _digest(*inputs)
    return _table_step(
        state_url(cfg, stage.name, marker=True),
        state_url(cfg, stage.name),
        input_fp,
        cfg_hash,
        lambda: stage.reduce([map_url(cfg, stage.name, i) for i in range(n_parts)], stage_cfg),
    )


def run_global_apply(cfg: PipelineConfig, stage_index: int, part_index: int) -> dict[str, Any]:
    """Apply a global stage's state to one part: score columns, then decide."""
    stage, stage_cfg, cfg_hash, previous = _stage_setup(cfg, stage_index)
    state_hash = _marker(state_url(cfg, stage.name, marker=True))["output"]
    input_fp = _digest(_output_hash(cfg, previous, part_index), state_hash)
    done = _skip(marker_url(cfg, stage.name, part_index), input_fp, cfg_hash)
    if done:
        return done
    table = read_parquet(part_url(cfg, previous, part_index))
    result = stage.run(table, read_parquet(state_url(cfg, stage.name)), stage_cfg)
    return _finish_part(cfg, stage.name, part_index, result, input_fp, cfg_hash)


# --- conservation ------------------------------------------------------------------------------


def _num_rows(url: str) -> int:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return pq.read_metadata(f).num_rows


def check_stage(cfg: PipelineConfig, stage: str, n_parts: int) -> StageStats:
    """Counters of ``stage`` merged over the run, checked: in = kept + removed + quarantined,
    in = the previous stage's kept, and the counters match the rows in the files.
    Raises :class:`ConservationError` naming the stage."""
    names = stage_names(cfg)
    merged = StageStats(stage=stage)
    rows = {"kept": 0, "removed": 0, "quarantine": 0}
    for i in range(n_parts):
        url = marker_url(cfg, stage, i)
        if not exists(url):
            raise ConservationError(f"stage {stage!r}: part {i} has no done marker")
        stats = dict(_marker(url)["stats"])
        merged = merged.merge(StageStats.from_dict(stats))
        rows["kept"] += _num_rows(part_url(cfg, stage, i))
        rows["removed"] += _num_rows(part_url(cfg, stage, i, "removed"))
        rows["quarantine"] += _num_rows(part_url(cfg, stage, i, "quarantine"))
    merged.check()
    counted = {
        "kept": merged.kept,
        "removed": merged.removed_total,
        "quarantine": merged.quarantined_total,
    }
    if rows != counted:
        raise ConservationError(f"stage {stage!r}: counters {counted} but files hold {rows}")
    position = names.index(stage)
    if position > 0:
        previous = check_stage_totals(cfg, names[position - 1], n_parts)
        if merged.docs_in != previous.kept:
            raise ConservationError(
                f"stage {stage!r}: {merged.docs_in} documents in but the previous stage "
                f"{names[position - 1]!r} kept {previous.kept}"
            )
    return merged


def check_stage_totals(cfg: PipelineConfig, stage: str, n_parts: int) -> StageStats:
    """The merged counters of ``stage`` from its markers (no file checks)."""
    merged = StageStats(stage=stage)
    for i in range(n_parts):
        merged = merged.merge(StageStats.from_dict(_marker(marker_url(cfg, stage, i))["stats"]))
    return merged


# --- mixing, tokenizer, shards -----------------------------------------------------------------

_MIX_COLUMNS = ["id", "text", "domain", "lang"]


def _final_parts_fp(cfg: PipelineConfig, n_parts: int) -> str:
    last = final_stage(cfg)
    return _digest(*(_output_hash(cfg, last, i) for i in range(n_parts)))


def _read_columns(url: str, columns: list[str]) -> pa.Table:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        names = pq.read_schema(f).names
        f.seek(0)
        return pq.read_table(f, columns=[c for c in columns if c in names])


def run_mix_plan(cfg: PipelineConfig, n_parts: int) -> dict[str, Any]:
    """Reduce: token histograms of the kept documents → the mixing plan (``mix/plan.json``)."""
    input_fp = _final_parts_fp(cfg, n_parts)
    cfg_hash = _digest(config_hash(cfg.mix), code_version("curate.mix"))
    url = join(cfg.run_url, "mix", "plan.done.json")
    if done_marker_matches(url, input_fp, cfg_hash):
        return {**_marker(url)["stats"], "skipped": True}
    start = time.perf_counter()
    last = final_stage(cfg)
    available = mix.sum_counts(
        mix.available_tokens(_read_columns(part_url(cfg, last, i), _MIX_COLUMNS), cfg.mix)
        for i in range(n_parts)
    )
    plan = mix.plan_mixture(available, cfg.mix, token_source=f"bytes/{cfg.mix.bytes_per_token:g}")
    plan_json = plan.model_dump(mode="json")
    write_json_atomic(plan_json, join(cfg.run_url, "mix", "plan.json"))
    stats = {"budget_tokens": plan.budget_tokens, "seconds": time.perf_counter() - start}
    write_json_atomic(
        {
            "input_fingerprint": input_fp,
            "config_hash": cfg_hash,
            "output": config_hash(plan_json),
            "stats": stats,
        },
        url,
    )
    return {**stats, "skipped": False}


def load_plan(cfg: PipelineConfig) -> mix.MixPlan:
    return mix.MixPlan.model_validate(read_json(join(cfg.run_url, "mix", "plan.json")))


def _plan_hash(cfg: PipelineConfig) -> str:
    return _marker(join(cfg.run_url, "mix", "plan.done.json"))["output"]


def run_mix_part(cfg: PipelineConfig, part_index: int) -> dict[str, Any]:
    """Map: the documents of one part selected by the plan, with ``repeats``."""
    last = final_stage(cfg)
    input_fp = _digest(_output_hash(cfg, last, part_index), _plan_hash(cfg))
    cfg_hash = _digest(config_hash(cfg.mix), code_version("curate.mix"))
    url = marker_url(cfg, "mix", part_index)
    if done_marker_matches(url, input_fp, cfg_hash):
        return {**_marker(url)["stats"], "skipped": True}
    start = time.perf_counter()
    plan = load_plan(cfg)
    table = read_parquet(part_url(cfg, last, part_index))
    mixed = mix.apply_mixture(table, plan)
    output = _write_table(mixed, part_url(cfg, "mix", part_index))
    stats = {
        "docs_in": table.num_rows,
        "selected": mixed.num_rows,
        "copies": int(np.asarray(mixed.column("repeats").to_numpy(zero_copy_only=False)).sum())
        if mixed.num_rows
        else 0,
        "selected_tokens": mix.selected_tokens(mixed, plan),
        "seconds": time.perf_counter() - start,
    }
    write_json_atomic(
        {"input_fingerprint": input_fp, "config_hash": cfg_hash, "output": output, "stats": stats},
        url,
    )
    return {**stats, "skipped": False}


def tokenizer_url(cfg: PipelineConfig) -> str:
    return join(cfg.run_url, "tokenizer", TOKENIZER_FILE)


def run_tokenizer(cfg: PipelineConfig, n_parts: int) -> dict[str, Any]:
    """Reduce: train the SentencePiece tokenizer on a sample drawn from the mixed parts."""
    input_fp = _digest(*(_output_hash(cfg, "mix", i) for i in range(n_parts)))
    cfg_hash = _digest(config_hash(cfg.tokenizer), code_version("curate.tokenizer"))
    url = join(cfg.run_url, "tokenizer", "done.json")
    if done_marker_matches(url, input_fp, cfg_hash):
        return {**_marker(url)["stats"], "skipped": True}
    start = time.perf_counter()
    urls = [part_url(cfg, "mix", i) for i in range(n_parts)]
    # pyarrow reads local paths itself; parts elsewhere are read through fsspec
    parts = urls if is_local(cfg.run_url) else [read_parquet(u) for u in urls]
    path = train_tokenizer(parts, cfg.tokenizer, tokenizer_url(cfg))
    fs, local = filesystem(path)
    with fs.open(local, "rb") as f:
        output = hashlib.sha256(f.read()).hexdigest()
    stats = {"vocab_size": cfg.tokenizer.vocab_size, "seconds": time.perf_counter() - start}
    write_json_atomic(
        {"input_fingerprint": input_fp, "config_hash": cfg_hash, "output": output, "stats": stats},
        url,
    )
    return {**stats, "skipped": False}


def run_encode_part(cfg: PipelineConfig, part_index: int) -> dict[str, Any]:
    """Map: token ids of one mixed part (``encoded/part-NNNNN.parquet``)."""
    tok_hash = _marker(join(cfg.run_url, "tokenizer", "done.json"))["output"]
    input_fp = _digest(_output_hash(cfg, "mix", part_index), tok_hash)
    cfg_hash = _digest(config_hash(cfg.shards), code_version("curate.shards.write"))
    url = marker_url(cfg, "encoded", part_index)
    if done_marker_matches(url, input_fp, cfg_hash):
        return {**_marker(url)["stats"], "skipped": True}
    start = time.perf_counter()
    encoded = encode_part(
        read_parquet(part_url(cfg, "mix", part_index)), _local_tokenizer(cfg), cfg.shards
    )
    output = _write_table(encoded, part_url(cfg, "encoded", part_index))
    tokens = encoded.column("n_tokens").to_numpy() if encoded.num_rows else np.zeros(0)
    stats = {
        "docs": encoded.num_rows,
        "tokens": int(tokens.sum()),
        "seconds": time.perf_counter() - start,
    }
    write_json_atomic(
        {"input_fingerprint": input_fp, "config_hash": cfg_hash, "output": output, "stats": stats},
        url,
    )
    return {**stats, "skipped": False}


def _local_tokenizer(cfg: PipelineConfig) -> str:
    """A local path of the run's tokenizer model (sentencepiece reads local files only): on a
    remote run directory, a copy cached once per machine (:func:`curate.storage.local_copy`)."""
    return local_copy(tokenizer_url(cfg))


def shards_dir(cfg: PipelineConfig) -> str:
    return join(cfg.run_url, "shards")


def run_shards(cfg: PipelineConfig, n_parts: int) -> dict[str, Any]:
    """Reduce: pack, shuffle, split and write the token shards and ``manifest.json``."""
    input_fp = _digest(*(_output_hash(cfg, "encoded", i) for i in range(n_parts)))
    cfg_hash = _digest(
        config_hash(cfg.shards),
        config_hash(cfg.mix),
        cfg.name,
        code_version("curate.shards.write", "curate.shards.format"),
    )
    url = join(shards_dir(cfg), "done.json")
    if done_marker_matches(url, input_fp, cfg_hash):
        return {**_marker(url)["stats"], "skipped": True}
    start = time.perf_counter()
    fs, out = filesystem(shards_dir(cfg))
    local = is_local(cfg.run_url)
    staging = out if local else tempfile.mkdtemp(prefix="sluice-shards-")
    encoded = [part_url(cfg, "encoded", i) for i in range(n_parts)]
    manifest = write_shards(
        encoded if local else [read_parquet(u) for u in encoded],
        staging,
        cfg.shards,
        _local_tokenizer(cfg),
        mixture_target=load_plan(cfg).target_weights,
        source_run=cfg.name,
    )
    if not local:  # written locally, then copied to the run directory
        fs.put(staging.rstrip("/") + "/", out, recursive=True)
        shutil.rmtree(staging, ignore_errors=True)
    stats = {
        "splits": {
            name: {"sequences": s.sequences, "tokens": s.tokens, "files": len(s.files)}
            for name, s in manifest.splits.items()
        },
        "seconds": time.perf_counter() - start,
    }
    write_json_atomic(
        {"input_fingerprint": input_fp, "config_hash": cfg_hash, "output": "", "stats": stats},
        url,
    )
    return {**stats, "skipped": False}


# --- the whole run, in-process -----------------------------------------------------------------


def stage_is_global(cfg: PipelineConfig, stage_index: int) -> bool:
    load_plugins(cfg.plugins)
    return isinstance(STAGES[cfg.stages[stage_index].name], GlobalStage)


def run_pipeline(
    cfg: PipelineConfig, on_step: Callable[[str, float], None] | None = None
) -> dict[str, Any]:
    """Run every step in this process, in order (what the flow does on Ray); returns the
    per-stage counters and timings and writes the report (``curate.report``)."""
    from curate.report import write_report

    timings: dict[str, float] = {}

    def timed(step: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        timings[step] = time.perf_counter() - start
        if on_step:
            on_step(step, timings[step])
        return out

    parts = timed("plan", lambda: plan_run(cfg))
    n = len(parts)
    stats: dict[str, StageStats] = {}
    skipped: dict[str, int] = {}

    def per_part(step: str, fn: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
        results = timed(step, lambda: [fn(i) for i in progress(range(n), step, unit="part")])
        skipped[step] = sum(bool(r.get("skipped")) for r in results)
        return results

    per_part(EXTRACT_STAGE, lambda i: run_extract_part(cfg, i, parts[i]))
    stats[EXTRACT_STAGE] = check_stage(cfg, EXTRACT_STAGE, n)
    if quality_training_stage(cfg) is not None:
        timed("quality.train", lambda: run_quality_train(cfg, n))
    for k, entry in enumerate(cfg.stages):
        if stage_is_global(cfg, k):
            per_part(f"{entry.name}.map", lambda i, k=k: run_global_map(cfg, k, i))
            timed(f"{entry.name}.reduce", lambda k=k: run_global_reduce(cfg, k, n))
            per_part(entry.name, lambda i, k=k: run_global_apply(cfg, k, i))
        else:
            per_part(entry.name, lambda i, k=k: run_stage_part(cfg, k, i))
        stats[entry.name] = check_stage(cfg, entry.name, n)
    timed("mix.plan", lambda: run_mix_plan(cfg, n))
    mixed = per_part("mix", lambda i: run_mix_part(cfg, i))
    timed("tokenizer", lambda: run_tokenizer(cfg, n))
    per_part("encode", lambda i: run_encode_part(cfg, i))
    timed("shards", lambda: run_shards(cfg, n))
    return write_report(cfg, stats, timings, mixed, skipped=skipped)
