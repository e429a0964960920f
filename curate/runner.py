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
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.config import PipelineConfig
from curate.layout import MIX, RunLayout
from curate.memory import disable_transparent_huge_pages, peak_rss, release_unused
from curate.plan import (
    Content,
    NotDone,
    Plan,
    Step,
    build_plan,
    check_data_options,
    code_version,  # noqa: F401 - re-exported: a step's code fingerprint
    json_bytes,
    list_parts,
)
from curate.progress import heartbeat, progress
from curate.readers import skipped_report
from curate.stage import ConservationError, StageStats
from curate.storage import (
    TableSlices,
    done_marker_matches,
    exists,
    filesystem,
    is_local_fs,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_table_atomic,
)

log = logging.getLogger("sluice.runner")
PEAK_KEY = "peak_rss_mib"  # a computed call's result: its peak RSS (MiB; ``curate.memory``)
CALL_SECONDS = "call_seconds"  # ... and its wall seconds, reading and writing included

# --- the step protocol -------------------------------------------------------------------------


def _write(content: Content, url: str) -> dict[str, Any]:
    """Write one output atomically; returns its sha256 and size."""
    if isinstance(content, pa.Table | TableSlices):
        return write_table_atomic(content, url)
    data = content.read_bytes() if isinstance(content, Path) else content  # Path: staged
    write_bytes_atomic(data, url)
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _sha256(url: str) -> str:
    fs, path = filesystem(url)
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def damaged_outputs(plan: Plan, marker: dict[str, Any], full: bool = False) -> list[str]:
    """The outputs a done marker records that are missing, or of another size, or (``full``)
    of another sha256; [] when all are intact. A marker that records none is damaged."""
    outputs = marker.get("outputs")
    if not isinstance(outputs, dict):
        return ["(the marker records no outputs)"]
    damaged = []
    for rel, want in outputs.items():
        url = plan.layout.path(rel)
        fs, path = filesystem(url)
        if not fs.exists(path):
            damaged.append(f"{rel} (missing)")
        elif fs.size(path) != want["size"]:
            damaged.append(f"{rel} (size {fs.size(path)}, recorded {want['size']})")
        elif full and _sha256(url) != want["sha256"]:
            damaged.append(f"{rel} (sha256 differs from the marker's)")
    return damaged


def _input_markers(plan: Plan, step: Step, index: int | None) -> list[tuple[str, int | None]]:
    """(step, index) of every input a call of ``step`` reads."""
    out = []
    for name in step.inputs:
        source = plan.step(name)
        if source.kind == "reduce":
            out.append((name, None))
        elif source.kind == "buckets":
            out += [(name, b) for b in plan.indices(source)]
        elif step.kind == "map":
            out.append((name, index))
        elif step.reads is not None:  # a task over a range of the parts
            out += [(name, i) for i in step.reads(index)]
        else:
            out += [(name, i) for i in range(plan.n_parts)]
    return out


def _heal_inputs(plan: Plan, step: Step, index: int | None) -> None:
    """Before a step computes: every input it reads must hold the bytes its marker records (a
    full hash); a damaged one is recomputed first, so that a corrupt part is never carried
    downstream under a fresh marker."""
    for name, i in _input_markers(plan, step, index):
        damaged = damaged_outputs(plan, read_json(plan.step(name).marker(i)), full=True)
        if damaged:
            log.warning("%s: recomputing damaged input(s) %s", step.name, "; ".join(damaged))
            run_step(plan, name, i, force=True)


def done_result(
    plan: Plan, step: Step, index: int | None, verify: bool = False, log_damaged: bool = False
) -> dict[str, Any] | None:
    """The counters of a call that is done (its marker matches its fingerprint and the outputs
    it records are intact: their sizes, ``verify``: their sha256), with ``skipped``; else None.
    ``run_step`` skips such a call; the flow does not even submit it."""
    marker = step.marker(index)
    try:
        input_fp, cfg_hash = step.fingerprint(index)
    except NotDone:
        return None
    if not done_marker_matches(marker, input_fp, cfg_hash):
        return None
    recorded = read_json(marker)
    damaged = damaged_outputs(plan, recorded, full=verify)
    if damaged:
        if log_damaged:
            log.warning("%s: recomputing, its outputs are damaged: %s", marker, "; ".join(damaged))
        return None
    return {**recorded["stats"], "skipped": True}


def nothing_to_run(cfg: PipelineConfig) -> bool:
    """True when every call of ``cfg``'s run is done (same input files, every marker matching,
    every output there with its size): a rerun then computes nothing (the flow starts no Ray)."""
    from curate.plan import run_states

    try:
        plan, states, other_inputs = run_states(cfg)
    except (NotDone, OSError, ValueError):
        return False
    if other_inputs or any(s.state != "done" for s in states):
        return False
    return all(
        done_result(plan, step, i) is not None for step in plan.steps for i in plan.indices(step)
    )


def run_step(
    plan: Plan | PipelineConfig,
    name: str,
    index: int | None = None,
    verify: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Run step ``name`` (of part ``index`` for a map) unless its marker matches and the
    outputs it records are intact (exist with their size; ``verify``: their sha256 too);
    returns its counters with ``skipped``. ``plan`` may be the config (a worker builds the plan
    itself); ``force`` computes even when the marker matches."""
    disable_transparent_huge_pages()  # a worker of a cluster did not inherit the driver's
    plan = plan if isinstance(plan, Plan) else build_plan(plan)
    step = plan.step(name)
    marker = step.marker(index)
    input_fp, cfg_hash = step.fingerprint(index)
    if not force:
        done = done_result(plan, step, index, verify, log_damaged=True)
        if done is not None:
            return done
    _heal_inputs(plan, step, index)
    start = time.perf_counter()
    with peak_rss() as peak:  # this call's own peak (a Ray worker runs many calls)
        out = step.compute(index)
        try:
            written = {url: _write(content, url) for url, content in out.files.items()}
        finally:
            if out.staging is not None:
                shutil.rmtree(out.staging, ignore_errors=True)
    stats = {**out.stats}
    stats.setdefault("seconds", time.perf_counter() - start)
    first = next(iter(written.values()), {}).get("sha256", "")
    record = {
        "input_fingerprint": input_fp,
        "config_hash": cfg_hash,
        "output": first if out.output is None else out.output,
        "outputs": {plan.layout.relative(url): w for url, w in written.items()},
        "stats": stats,
        PEAK_KEY: peak.mib,
        **out.extra,
    }
    write_bytes_atomic(json_bytes(record), marker)
    wall = time.perf_counter() - start
    release_unused()  # the next call (a Ray worker runs many) starts from a modest footprint
    return {**stats, "skipped": False, PEAK_KEY: peak.mib, CALL_SECONDS: wall}


# --- conservation ------------------------------------------------------------------------------


def _num_rows(url: str) -> int:
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as f:
            return pq.read_metadata(f).num_rows
    except (OSError, ValueError) as e:  # a damaged file (UnicodeDecodeError is a ValueError)
        raise ConservationError(
            f"{url} is unreadable ({type(e).__name__}: {e}); `sluice run --verify` recomputes "
            "damaged outputs"
        ) from None


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


# --- owning the run directory ------------------------------------------------------------------

_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{32}$")


class RunLocked(RuntimeError):
    """Another run owns the run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def run_lock(layout: RunLayout) -> Iterator[None]:
    """Own the run directory while the block runs: ``run.lock`` holds this process's pid and
    host. A lock of a live run is :class:`RunLocked`; one left by a dead process on this host
    is taken over."""
    fs, path = filesystem(layout.lock)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
        try:
            if is_local_fs(fs):  # atomic create: of two runs starting at once, one gets it
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(json_bytes(me))
            elif fs.exists(path):
                raise FileExistsError(path)
            else:
                write_bytes_atomic(json_bytes(me), layout.lock)
            break
        except FileExistsError:
            try:
                owner = read_json(layout.lock)
            except (OSError, ValueError):
                owner = {}
            if owner.get("host") == me["host"] and not _alive(int(owner.get("pid", 0) or 0)):
                log.warning("taking over %s left by pid %s (not running)", path, owner.get("pid"))
                fs.rm(path)
                continue
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
            raise RunLocked(
                f"run directory {layout.root} is in use by pid {owner.get('pid')} on host "
                f"{owner.get('host')} (since {since}); wait for that run, or remove "
                f"{layout.lock} if it is gone"
            ) from None
    try:
        yield
    finally:
        if exists(layout.lock) and read_json(layout.lock).get("pid") == me["pid"]:
            fs.rm(path)


def clean_temporaries(layout: RunLayout) -> list[str]:
    """Remove what killed writers left (``*.tmp-<uuid>`` files and staging folders); run only
    by the run that owns the directory, before its steps start. Returns what was removed."""
    fs, root = filesystem(layout.root)
    if not fs.exists(root):
        return []
    found = [p for p in fs.find(root, withdirs=True) if _TEMPORARY.search(p.rstrip("/"))]
    removed = []
    for p in sorted(found, key=len):
        if any(p.startswith(r + "/") for r in removed) or not fs.exists(p):
            continue
        fs.rm(p, recursive=True)
        removed.append(p)
    if removed:
        log.warning("removed %d leftover temporary file(s) under %s", len(removed), layout.root)
    return removed


# --- the executor loop -------------------------------------------------------------------------

# How an executor runs one step over its calls (part indices, or [None] for a reduce), in order.
RunCalls = Callable[[Plan, Step, list[int | None]], list[dict[str, Any]]]
# How an executor runs a chain of map steps over the parts: part i's calls of every step of
# the chain in order, each part as soon as it can (no barrier between the steps); the results
# per step, each in part order.
RunChain = Callable[[Plan, list[Step], list[int | None]], list[list[dict[str, Any]]]]


def step_chains(plan: Plan) -> list[list[Step]]:
    """The plan's steps in order, grouped: consecutive map steps form one chain (a map step
    reads only the same part of the map steps before it, and whole outputs of the steps before
    its chain, so part i of a chain needs nothing but part i of the steps before it in the
    chain); every other step is a group of its own."""
    groups: list[list[Step]] = []
    for step in plan.steps:
        if step.kind == "map" and groups and groups[-1][-1].kind == "map":
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def chain_timings(
    wall: float, steps: list[Step], results: list[list[dict[str, Any]]]
) -> list[float]:
    """Each step's share of a chain's wall seconds: in proportion to the seconds its computed
    calls took (the steps of a chain overlap, so no step has a wall time of its own)."""
    spent = [
        sum(float(r.get(CALL_SECONDS, 0.0)) for r in rs if not r.get("skipped")) for rs in results
    ]
    total = sum(spent)
    if total <= 0:
        return [wall / len(steps)] * len(steps)
    return [wall * s / total for s in spent]


def plan_run(cfg: PipelineConfig, verify: bool = False, force_from: str | None = None) -> Plan:
    """Build the plan, list the parts, check the options that name data, and record the run
    (``config.json``, ``parts.json``)."""
    skipped: list[Any] = []
    parts = list_parts(cfg, skipped)
    check_data_options(cfg, parts)
    plan = build_plan(cfg)
    plan.verify = verify
    if force_from is not None:
        plan.step(force_from)  # KeyError names the steps
        plan.force_from = force_from
    write_json_atomic(
        {"hash": cfg.hash(), "config": cfg.model_dump(mode="json")}, plan.layout.config
    )
    write_json_atomic(
        {
            "parts": [[f.model_dump(mode="json") for f in part] for part in parts],
            "skipped": skipped_report(skipped),
        },
        plan.layout.parts,
    )
    return plan


def execute(
    cfg: PipelineConfig,
    run_calls: RunCalls,
    log: Callable[[str], None] = lambda message: None,
    on_step: Callable[[str, float], None] | None = None,
    verify: bool = False,
    force_from: str | None = None,
    run_chain: RunChain | None = None,
    on_sections: Callable[[list[Any]], None] | None = None,
) -> tuple[dict[str, Any], dict[str, float], dict[str, int]]:
    """Run every step of ``cfg``'s plan in order with ``run_calls``, check conservation after
    every document stage, write the report; returns (stats.json, timings, parts skipped).
    ``verify``: a step that is done is skipped only when its outputs have the recorded sha256
    (by default, their recorded sizes). ``force_from``: that step and every one after it
    recompute even when done. ``run_chain``: consecutive map steps (:func:`step_chains`) run
    as chains, each part through all of them without waiting for the other parts; their
    conservation is checked once the chain is done, and each step's seconds are its share of
    the chain's (:func:`chain_timings`). ``on_sections``: given the report's sections
    (``curate.report.write_report``)."""
    from curate.report import write_report

    disable_transparent_huge_pages()  # the steps' workers inherit it (curate.memory)
    timings: dict[str, float] = {}
    skipped: dict[str, int] = {}
    stats: dict[str, StageStats] = {}
    results: dict[str, list[dict[str, Any]]] = {}
    # peak RSS (MiB) per step: of its biggest call, and of this process (the driver) meanwhile
    memory: dict[str, dict[str, float | None]] = {"tasks": {}, "driver": {}}

    def done(step: Step, seconds: float, driver: float | None) -> None:
        timings[step.name] = seconds
        if on_step:
            on_step(step.name, seconds)
        peaks = [r[PEAK_KEY] for r in results[step.name] if r.get(PEAK_KEY) is not None]
        memory["tasks"][step.name] = max(peaks, default=None)
        memory["driver"][step.name] = driver
        if step.kind != "reduce":  # per part, or per bucket of a sharded reduce
            skipped[step.name] = sum(bool(r.get("skipped")) for r in results[step.name])
            unit = "parts" if step.kind == "map" else "buckets"
            calls = len(results[step.name])
            log(f"{step.name}: {calls} {unit} ({skipped[step.name]} already done)")

    start = time.perf_counter()
    layout = RunLayout(cfg.run_url)
    with run_lock(layout):
        clean_temporaries(layout)
        plan = plan_run(cfg, verify, force_from)
        timings["plan"] = time.perf_counter() - start
        if on_step:
            on_step("plan", timings["plan"])
        log(f"run {cfg.name}: {plan.n_parts} parts → {cfg.run_url}")
        groups = step_chains(plan) if run_chain else [[s] for s in plan.steps]
        for group in groups:
            start = time.perf_counter()
            with peak_rss() as driver:
                if len(group) == 1:
                    got = [run_calls(plan, group[0], plan.indices(group[0]))]
                else:
                    assert run_chain is not None
                    got = run_chain(plan, group, plan.indices(group[0]))
            wall = time.perf_counter() - start
            seconds = chain_timings(wall, group, got) if len(group) > 1 else [wall]
            for step, step_results, s in zip(group, got, seconds, strict=True):
                results[step.name] = step_results
                done(step, s, driver.mib)
            for step in group:
                if step.checks:
                    c = stats[step.checks] = check_stage(plan, step.checks, plan.n_parts)
                    log(
                        f"{step.checks}: {c.docs_in} in = {c.kept} kept + {c.removed_total} "
                        f"removed + {c.quarantined_total} quarantined"
                    )
        with heartbeat("report"), peak_rss() as driver:
            report = write_report(cfg, stats, timings, results[MIX], skipped, memory, on_sections)
        recorded = read_json(layout.timings)  # the report's own peak, added once it is known
        recorded["peak_rss_mib"]["driver"]["report"] = driver.mib
        write_json_atomic(recorded, layout.timings)
    return report, timings, skipped


def _in_process(plan: Plan, step: Step, indices: list[int | None]) -> list[dict[str, Any]]:
    force = plan.forced(step.name)
    if step.kind == "reduce":
        return [run_step(plan, step.name, None, plan.verify, force)]
    calls = progress(indices, step.name, unit="part" if step.kind == "map" else "bucket")
    return [run_step(plan, step.name, i, plan.verify, force) for i in calls]


def run_pipeline(
    cfg: PipelineConfig,
    on_step: Callable[[str, float], None] | None = None,
    verify: bool = False,
    force_from: str | None = None,
) -> dict[str, Any]:
    """Run every step in this process, in order (what the flow does on Ray); returns the
    per-stage counters (stats.json) and writes the report (``curate.report``)."""
    return execute(cfg, _in_process, on_step=on_step, verify=verify, force_from=force_from)[0]
