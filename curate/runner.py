"""Running a plan (``curate.plan``): one step protocol and one executor loop.

:func:`run_step` is the protocol of every step: skip when its done marker matches its
fingerprint (input fingerprint + config hash), else compute → write every output atomically →
write the marker (the fingerprint, the output hash, the counters). So a rerun of a finished run
does no work, and a run killed in the middle finishes the rest on rerun with byte-identical
outputs (every step is deterministic).

:func:`execute` is the loop over the plan's steps, given how to run one step's calls:
:func:`run_pipeline` runs them in this process, ``flows.curate`` as Prefect tasks on Ray. The
paths of a run directory are ``curate.layout.RunLayout``'s.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.config import PipelineConfig
from curate.layout import MIX, RunLayout
from curate.plan import (
    Content,
    Plan,
    Step,
    build_plan,
    check_data_options,
    code_version,  # noqa: F401 - re-exported: a step's code fingerprint
    json_bytes,
    list_parts,
)
from curate.progress import progress
from curate.stage import ConservationError, StageStats
from curate.storage import (
    PARQUET_OPTIONS,
    done_marker_matches,
    exists,
    filesystem,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
)

# --- the step protocol -------------------------------------------------------------------------


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return sink.getvalue().to_pybytes()


def _write(content: Content, url: str) -> str:
    """Write one output atomically; returns the sha256 of its bytes."""
    if isinstance(content, Path):  # staged on local disk
        data = content.read_bytes()
    else:
        data = parquet_bytes(content) if isinstance(content, pa.Table) else content
    write_bytes_atomic(data, url)
    return hashlib.sha256(data).hexdigest()


def run_step(plan: Plan | PipelineConfig, name: str, index: int | None = None) -> dict[str, Any]:
    """Run step ``name`` (of part ``index`` for a map) unless its marker matches; returns its
    counters with ``skipped``. ``plan`` may be the config (a worker builds the plan itself)."""
    plan = plan if isinstance(plan, Plan) else build_plan(plan)
    step = plan.step(name)
    marker = step.marker(index)
    input_fp, cfg_hash = step.fingerprint(index)
    if done_marker_matches(marker, input_fp, cfg_hash):
        return {**read_json(marker)["stats"], "skipped": True}
    start = time.perf_counter()
    out = step.compute(index)
    try:
        hashes = [_write(content, url) for url, content in out.files.items()]
    finally:
        if out.staging is not None:
            shutil.rmtree(out.staging, ignore_errors=True)
    stats = {**out.stats}
    stats.setdefault("seconds", time.perf_counter() - start)
    record = {
        "input_fingerprint": input_fp,
        "config_hash": cfg_hash,
        "output": hashes[0] if out.output is None else out.output,
        "stats": stats,
        **out.extra,
    }
    write_bytes_atomic(json_bytes(record), marker)
    return {**stats, "skipped": False}


# --- conservation ------------------------------------------------------------------------------


def _num_rows(url: str) -> int:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return pq.read_metadata(f).num_rows


def stage_names(cfg: PipelineConfig) -> list[str]:
    """The document stages of the run in order: extract, then the configured ones."""
    return build_plan(cfg).stages


def _merged(layout: RunLayout, stage: str, n_parts: int) -> StageStats:
    merged = StageStats(stage=stage)
    for i in range(n_parts):
        url = layout.marker(stage, i)
        if not exists(url):
            raise ConservationError(f"stage {stage!r}: part {i} has no done marker")
        merged = merged.merge(StageStats.from_dict(read_json(url)["stats"]))
    return merged


def check_stage(cfg: PipelineConfig | Plan, stage: str, n_parts: int) -> StageStats:
    """Counters of ``stage`` merged over the run, checked: in = kept + removed + quarantined,
    in = the previous stage's kept, and the counters match the rows in the files.
    Raises :class:`ConservationError` naming the stage."""
    plan = cfg if isinstance(cfg, Plan) else build_plan(cfg)
    layout = plan.layout
    merged = _merged(layout, stage, n_parts).check()
    rows = {
        kind: sum(_num_rows(layout.part(stage, i, kind)) for i in range(n_parts))
        for kind in ("kept", "removed", "quarantine")
    }
    counted = {
        "kept": merged.kept,
        "removed": merged.removed_total,
        "quarantine": merged.quarantined_total,
    }
    if rows != counted:
        raise ConservationError(f"stage {stage!r}: counters {counted} but files hold {rows}")
    position = plan.stages.index(stage)
    if position > 0:
        previous = plan.stages[position - 1]
        kept = _merged(layout, previous, n_parts).kept
        if merged.docs_in != kept:
            raise ConservationError(
                f"stage {stage!r}: {merged.docs_in} documents in but the previous stage "
                f"{previous!r} kept {kept}"
            )
    return merged


# --- the executor loop -------------------------------------------------------------------------

# How an executor runs one step over its calls (part indices, or [None] for a reduce), in order.
RunCalls = Callable[[Plan, Step, list[int | None]], list[dict[str, Any]]]


def plan_run(cfg: PipelineConfig) -> Plan:
    """Build the plan, list the parts, check the options that name data, and record the run
    (``config.json``, ``parts.json``)."""
    parts = list_parts(cfg)
    check_data_options(cfg, parts)
    plan = build_plan(cfg)
    write_json_atomic(
        {"hash": cfg.hash(), "config": cfg.model_dump(mode="json")}, plan.layout.config
    )
    write_json_atomic(
        {"parts": [[f.model_dump(mode="json") for f in part] for part in parts]},
        plan.layout.parts,
    )
    return plan


def execute(
    cfg: PipelineConfig,
    run_calls: RunCalls,
    log: Callable[[str], None] = lambda message: None,
    on_step: Callable[[str, float], None] | None = None,
) -> tuple[dict[str, Any], dict[str, float], dict[str, int]]:
    """Run every step of ``cfg``'s plan in order with ``run_calls``, check conservation after
    every document stage, write the report; returns (stats.json, timings, parts skipped)."""
    from curate.report import write_report

    timings: dict[str, float] = {}
    skipped: dict[str, int] = {}
    stats: dict[str, StageStats] = {}
    results: dict[str, list[dict[str, Any]]] = {}

    def timed(name: str, start: float) -> None:
        timings[name] = time.perf_counter() - start
        if on_step:
            on_step(name, timings[name])

    start = time.perf_counter()
    plan = plan_run(cfg)
    timed("plan", start)
    log(f"run {cfg.name}: {plan.n_parts} parts → {cfg.run_url}")
    for step in plan.steps:
        start = time.perf_counter()
        results[step.name] = run_calls(plan, step, plan.indices(step))
        if step.kind == "map":
            skipped[step.name] = sum(bool(r.get("skipped")) for r in results[step.name])
            log(f"{step.name}: {plan.n_parts} parts ({skipped[step.name]} already done)")
        timed(step.name, start)
        if step.checks:
            s = stats[step.checks] = check_stage(plan, step.checks, plan.n_parts)
            log(
                f"{step.checks}: {s.docs_in} in = {s.kept} kept + {s.removed_total} removed + "
                f"{s.quarantined_total} quarantined"
            )
    report = write_report(cfg, stats, timings, results[MIX], skipped=skipped)
    return report, timings, skipped


def _in_process(plan: Plan, step: Step, indices: list[int | None]) -> list[dict[str, Any]]:
    if step.kind != "map":
        return [run_step(plan, step.name, None)]
    return [run_step(plan, step.name, i) for i in progress(indices, step.name, unit="part")]


def run_pipeline(
    cfg: PipelineConfig, on_step: Callable[[str, float], None] | None = None
) -> dict[str, Any]:
    """Run every step in this process, in order (what the flow does on Ray); returns the
    per-stage counters (stats.json) and writes the report (``curate.report``)."""
    return execute(cfg, _in_process, on_step=on_step)[0]
