"""The plan of a run: from the config, the ordered list of its steps.

Every step has a name, a kind (``map``: once per part; ``reduce``: once), the steps whose
outputs it reads, the marker that records it, its fingerprint (input fingerprint + config
hash, from its inputs' markers) and the function that computes its outputs. The order::

    extract → [fits that read extract] → for each configured stage: [its fit] →
    (map | global map → reduce → apply) → mix.plan → mix → tokenizer → encode → shards

A stage declares what it needs (``Stage``: score + rules; ``GlobalStage``: map, reduce,
apply; ``Fit``: something learned from the run's documents first): the plan turns that into
steps, so no executor knows any stage by name. ``curate.runner`` runs the steps (in-process,
or as Prefect tasks on Ray from ``flows.curate``) with one protocol: skip when the marker
matches, else compute → atomic writes → marker.

:func:`describe` is ``sluice run --dry-run``: steps, parts, what is done and what will run,
and why. :func:`check_data_options` checks the options that name data (files, models,
training-source patterns) before anything runs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from curate import mix
from curate.config import PipelineConfig
from curate.dedup.common import BUCKET_OPTIONS
from curate.layout import ENCODED, EXTRACT_STAGE, MIX, RunLayout
from curate.progress import heartbeat
from curate.readers import InputFile, extract_part, list_inputs, plan_parts
from curate.shards.format import MANIFEST_NAME, manifest_bytes, token_dtype
from curate.shards.write import (
    RUN_OPTIONS,
    TOKENIZER_NAME,
    encode_part,
    tokenizer_info,
    write_shards,
)
from curate.stage import Fit, GlobalStage, StageResult
from curate.stages import STAGES, load_plugins
from curate.storage import (
    TableSlices,
    config_hash,
    exists,
    filesystem,
    fingerprint,
    is_local_fs,
    local_copy,
    name_bytes,
    parquet_bytes,
    read_bytes,
    read_columns,
    read_json,
    read_parquet,
    read_parquet_rows,
)
from curate.tokenizer import load_tokenizer, train_tokenizer

MAP, REDUCE, BUCKETS = "map", "reduce", "buckets"
# rows per row group of a map's shuffled keys: a bucket task reads at most two row groups per
# part beyond its key range
SHUFFLE_ROW_GROUP = 8192


# --- fingerprints ------------------------------------------------------------------------------


def _digest(*items: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for item in items:
        h.update(name_bytes(item))  # a url may hold a file name that is not UTF-8
        h.update(b"\x00")
    return h.hexdigest()


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


def json_bytes(obj: Any) -> bytes:
    """The bytes ``curate.storage.write_json_atomic`` writes."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


class NotDone(RuntimeError):
    """A step's input has not been computed (no marker)."""


# --- steps -------------------------------------------------------------------------------------

# Path: a file staged on local disk, moved into place; TableSlices: a table written as it comes
Content = bytes | pa.Table | Path | TableSlices


@dataclass
class Output:
    """What a step computed: ``files`` (URL → content, written atomically in order), counters,
    the hash its consumers fingerprint (default: the first file's sha256) and more marker keys."""

    files: dict[str, Content]
    stats: dict[str, Any]
    output: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    staging: Path | None = None  # a local folder of staged files, removed once they are moved


@dataclass(frozen=True)
class Step:
    """One step of the plan; ``index`` is the part for a map, None for a reduce, the bucket for
    a ``buckets`` step (``tasks()`` of them: the shards of a global reduce)."""

    name: str
    kind: Literal["map", "reduce", "buckets"]
    inputs: tuple[str, ...]
    marker: Callable[[int | None], str]
    fingerprint: Callable[[int | None], tuple[str, str]]  # (input fingerprint, config hash)
    compute: Callable[[int | None], Output]
    checks: str | None = None  # the document stage whose conservation is checked afterwards
    tasks: Callable[[], int] | None = None  # how many calls a ``buckets`` step makes
    # the parts of its per-part inputs a ``buckets`` call reads (default: every part)
    reads: Callable[[int | None], range] | None = None
    cpus: int = 1  # cores one call can use (its threads): what an executor on a cluster reserves


@dataclass
class Plan:
    cfg: PipelineConfig
    layout: RunLayout
    steps: list[Step]
    stages: list[str]  # document stages in order: extract, then the configured ones
    verify: bool = False  # a skipped step checks its outputs' sha256 (not only their sizes)
    force_from: str | None = None  # this step and every one after it recompute (``--force``)

    def forced(self, name: str) -> bool:
        """True when ``--force`` recomputes step ``name`` (it is the forced step or after it)."""
        if self.force_from is None:
            return False
        names = [s.name for s in self.steps]
        return names.index(name) >= names.index(self.force_from)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step {name!r} in the plan (steps: {[s.name for s in self.steps]})")

    @functools.cached_property
    def parts(self) -> list[list[InputFile]]:
        """The input files of every part, as planned (``parts.json``)."""
        if not exists(self.layout.parts):
            raise NotDone(f"the run is not planned yet (no {self.layout.parts})")
        return read_parts(self.layout.parts)

    @property
    def n_parts(self) -> int:
        return len(self.parts)

    def indices(self, step: Step) -> list[int | None]:
        if step.kind == BUCKETS and step.tasks is not None:
            return list(range(step.tasks()))
        return list(range(self.n_parts)) if step.kind == MAP else [None]


# parts.json parsed, per URL: (digest of its bytes, parts); see read_parts
_PARSED_PARTS: dict[str, tuple[str, list[list[InputFile]]]] = {}
_PARSED_PARTS_KEPT = 4  # runs whose parts a process keeps parsed (an ablation runs several)


def read_parts(url: str) -> list[list[InputFile]]:
    """The parts recorded in ``url`` (a ``parts.json``), parsed once per process and content.

    Every call a Ray worker runs builds the plan anew, and validating the entries costs ~5 µs
    each: 0.4 s of CPU per call for the 77k files of a 1.3 GB corpus, paid ~200 times by a run.
    The file is still read each time; only identical bytes reuse the parsed entries (frozen)."""
    data = read_bytes(url)
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    cached = _PARSED_PARTS.get(url)
    if cached is None or cached[0] != digest:
        entries = json.loads(data)["parts"]
        cached = (digest, [[InputFile.model_validate(f) for f in part] for part in entries])
        _PARSED_PARTS.pop(url, None)
        while len(_PARSED_PARTS) >= _PARSED_PARTS_KEPT:
            _PARSED_PARTS.pop(next(iter(_PARSED_PARTS)))
        _PARSED_PARTS[url] = cached
    return [list(part) for part in cached[1]]


def list_parts(cfg: PipelineConfig, skipped: list[Any] | None = None) -> list[list[InputFile]]:
    """List the inputs and cut them into parts (writes nothing); entries the listing passed
    over are appended to ``skipped`` (``curate.readers.skipped_report``)."""
    files = list_inputs(cfg.inputs, cfg.domain_rules, [] if skipped is None else skipped)
    if not files:
        raise ValueError(f"no input files found for {[s.path for s in cfg.inputs]}")
    return plan_parts(files, cfg.parts.files_per_part, cfg.parts.bytes_per_part)


def output_hash(marker: str) -> str:
    """The hash a finished step recorded for its consumers."""
    if not exists(marker):
        raise NotDone(f"{marker} has not run")
    return read_json(marker)["output"]


@dataclass(frozen=True)
class _StageInfo:
    name: str
    stage: Any
    cfg: BaseModel
    options: dict[str, Any]
    previous: str


def _stage_infos(cfg: PipelineConfig) -> list[_StageInfo]:
    load_plugins(cfg.plugins)
    out = []
    names = [EXTRACT_STAGE, *(s.name for s in cfg.stages)]
    for k, entry in enumerate(cfg.stages):
        stage_cfg = cfg.stage_config(k)
        out.append(
            _StageInfo(
                entry.name,
                STAGES[entry.name],
                stage_cfg,
                stage_cfg.model_dump(mode="json"),
                names[k],
            )
        )
    return out


def build_plan(cfg: PipelineConfig) -> Plan:
    """The steps of ``cfg``'s run, in order (nothing is read or written until they run)."""
    lay = RunLayout(cfg.run_url)
    infos = _stage_infos(cfg)
    stages = [EXTRACT_STAGE, *(i.name for i in infos)]
    steps: list[Step] = []
    plan = Plan(cfg, lay, steps, stages)

    def part_hash(stage: str, i: int) -> str:
        return output_hash(lay.marker(stage, i))

    def all_parts_hash(stage: str) -> str:
        return _digest(*(part_hash(stage, i) for i in range(plan.n_parts)))

    # extract
    def extract_fp(i: int | None) -> tuple[str, str]:
        files = plan.parts[i]
        urls = [f.url for f in files]
        input_fp = _digest(
            fingerprint(urls), *(f"{f.url}|{f.name}|{f.format}|{f.domain}" for f in files)
        )
        return input_fp, _digest(config_hash(cfg.extract), code_version("curate.readers"))

    def extract_compute(i: int | None) -> Output:
        result = extract_part(plan.parts[i], cfg.extract)
        counters = dict(sorted(getattr(result, "counters", {}).items()))
        return _doc_output(lay, EXTRACT_STAGE, i, result, {"counters": counters})

    steps.append(
        Step(
            EXTRACT_STAGE,
            MAP,
            (),
            lambda i: lay.marker(EXTRACT_STAGE, i),
            extract_fp,
            extract_compute,
            EXTRACT_STAGE,
        )
    )

    # stages (and the fits they declare, each right after the stage it reads)
    fits = [(info, info.stage.fit) for info in infos if _fit_needed(info)]
    fitted: dict[str, str] = {}  # stage -> its fit's step name

    def add_fits(after: str) -> None:
        for info, fit in fits:
            if fit.reads == after:
                fitted[info.name] = _add_fit_step(plan, info, fit)

    add_fits(EXTRACT_STAGE)
    for info in infos:
        _add_stage_steps(plan, info, fitted.get(info.name))
        add_fits(info.name)

    # mix, tokenizer, encode, shards
    last = stages[-1]
    mix_hash = _digest(config_hash(cfg.mix), code_version("curate.mix"))

    def mix_plan_compute(_: int | None) -> Output:
        available = mix.sum_counts(
            mix.available_tokens(read_columns(lay.part(last, i), _MIX_COLUMNS), cfg.mix)
            for i in range(plan.n_parts)
        )
        token_source = f"bytes/{cfg.mix.bytes_per_token:g}"
        plan_json = mix.plan_mixture(available, cfg.mix, token_source=token_source).model_dump(
            mode="json"
        )
        return Output(
            {lay.mix_plan: json_bytes(plan_json)},
            {"budget_tokens": plan_json["budget_tokens"]},
            output=config_hash(plan_json),
        )

    steps.append(
        Step(
            "mix.plan",
            REDUCE,
            (last,),
            lambda _: lay.mix_plan_marker,
            lambda _: (all_parts_hash(last), mix_hash),
            mix_plan_compute,
        )
    )

    def mix_compute(i: int | None) -> Output:
        mix_plan = mix.MixPlan.model_validate(read_json(lay.mix_plan))
        table = read_parquet(lay.part(last, i))
        mixed = mix.apply_mixture(table, mix_plan)
        copies = np.asarray(mixed.column("repeats").to_numpy(zero_copy_only=False)).sum()
        stats = {
            "docs_in": table.num_rows,
            "selected": mixed.num_rows,
            "copies": int(copies) if mixed.num_rows else 0,
            "selected_tokens": mix.selected_tokens(mixed, mix_plan),
        }
        return Output({lay.part(MIX, i): mixed}, stats)

    steps.append(
        Step(
            MIX,
            MAP,
            (last, "mix.plan"),
            lambda i: lay.marker(MIX, i),
            lambda i: (_digest(part_hash(last, i), output_hash(lay.mix_plan_marker)), mix_hash),
            mix_compute,
        )
    )

    local_run = is_local_fs(filesystem(cfg.run_url)[0])

    def tables_or_paths(urls: list[str]) -> list[Any]:
        # pyarrow reads local paths itself; parts elsewhere are read through fsspec
        return urls if local_run else [read_parquet(u) for u in urls]

    given = cfg.tokenizer.model_path

    def tokenizer_compute(_: int | None) -> Output:
        if given is not None:  # a given model: copied, with its summary when it has one
            summary_url = given + ".json"
            summary = read_bytes(summary_url) if exists(summary_url) else json_bytes({})
            return Output(
                {lay.tokenizer_model: read_bytes(given), lay.tokenizer_model + ".json": summary},
                {"vocab_size": load_tokenizer(given).get_piece_size(), "given": given},
            )
        urls = [lay.part(MIX, i) for i in range(plan.n_parts)]
        with tempfile.TemporaryDirectory(prefix="sluice-tokenizer-") as tmp:
            with heartbeat(f"tokenizer (vocab {cfg.tokenizer.vocab_size})"):
                path = train_tokenizer(tables_or_paths(urls), cfg.tokenizer, f"{tmp}/model")
            model, summary = Path(path).read_bytes(), Path(path + ".json").read_bytes()
        return Output(
            {lay.tokenizer_model: model, lay.tokenizer_model + ".json": summary},
            {"vocab_size": cfg.tokenizer.vocab_size},
        )

    def tokenizer_fp(_: int | None) -> tuple[str, str]:
        code = code_version("curate.tokenizer")
        if given is not None:  # the given file's bytes, not the mixture, decide the output
            return hashlib.sha256(read_bytes(given)).hexdigest(), _digest("given", code)
        return all_parts_hash(MIX), _digest(config_hash(cfg.tokenizer), code)

    steps.append(
        Step(
            "tokenizer",
            REDUCE,
            () if given is not None else (MIX,),
            lambda _: lay.tokenizer_marker,
            tokenizer_fp,
            tokenizer_compute,
            cpus=1 if given is not None else cfg.tokenizer.num_threads,  # SentencePiece's threads
        )
    )

    def encode_compute(i: int | None) -> Output:
        table = read_parquet(lay.part(MIX, i))
        encoded = encode_part(table, local_copy(lay.tokenizer_model), cfg.shards)
        tokens = encoded.column("n_tokens").to_numpy() if encoded.num_rows else np.zeros(0)
        return Output(
            {lay.part(ENCODED, i): encoded}, {"docs": encoded.num_rows, "tokens": int(tokens.sum())}
        )

    steps.append(
        Step(
            "encode",
            MAP,
            (MIX, "tokenizer"),
            lambda i: lay.marker(ENCODED, i),
            lambda i: (
                _digest(part_hash(MIX, i), output_hash(lay.tokenizer_marker)),
                _digest(
                    config_hash(cfg.shards.model_dump(mode="json", exclude=set(RUN_OPTIONS))),
                    code_version("curate.shards.write"),
                ),
            ),
            encode_compute,
            cpus=cfg.shards.encode_threads,
        )
    )

    def shards_compute(_: int | None) -> Output:
        if local_run:  # staged beside the run directory, so that moving a file is a rename
            staging = Path(filesystem(lay.path(f"shards.tmp-{uuid.uuid4().hex}"))[1])
        else:
            staging = Path(tempfile.mkdtemp(prefix="sluice-shards-"))
        urls = [lay.part(ENCODED, i) for i in range(plan.n_parts)]
        manifest = write_shards(
            tables_or_paths(urls),
            staging,
            cfg.shards,
            local_copy(lay.tokenizer_model),
            mixture_target=mix.MixPlan.model_validate(read_json(lay.mix_plan)).target_weights,
            source_run=cfg.name,
        )
        files = {
            lay.path("shards", str(p.relative_to(staging))): p
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        # the manifest last: a reader that finds it finds every shard it names
        manifest_url = lay.path("shards", "manifest.json")
        files[manifest_url] = files.pop(manifest_url)
        splits = {
            name: {"sequences": s.sequences, "tokens": s.tokens, "files": len(s.files)}
            for name, s in manifest.splits.items()
        }
        return Output(
            files,
            {"splits": splits},
            output=_sha256_file(staging / "manifest.json"),
            staging=staging,
        )

    shards_hash = _digest(
        config_hash(cfg.shards.model_dump(mode="json", exclude=set(RUN_OPTIONS))),
        config_hash(cfg.mix),
        cfg.name,
        code_version("curate.shards.write", "curate.shards.format"),
    )
    if cfg.shards.writers == 1:
        steps.append(
            Step(
                "shards",
                REDUCE,
                ("encode", "mix.plan"),
                lambda _: lay.shards_marker,
                lambda _: (all_parts_hash(ENCODED), shards_hash),
                shards_compute,
            )
        )
    else:
        _add_shard_tasks(plan, shards_hash)
    return plan


def _add_shard_tasks(plan: Plan, shards_hash: str) -> None:
    """The shard writer as tasks (``curate.shards.parallel``): ``shards.plan`` (the stream
    layout, from token counts), ``shards.pack`` (one task per contiguous range of encoded
    parts: their row pieces), ``shards.write`` (one task per range of shard files) and
    ``shards`` (the manifest). The same bytes as the one-task writer."""
    from curate.shards import parallel

    cfg, lay = plan.cfg, plan.layout
    writers = cfg.shards.writers
    code = _digest(shards_hash, code_version("curate.shards.parallel"))

    def encoded_hash(parts: range) -> str:
        return _digest(*(output_hash(lay.marker(ENCODED, i)) for i in parts))

    def target() -> dict[str, float]:
        return mix.MixPlan.model_validate(read_json(lay.mix_plan)).target_weights

    def plan_compute(_: int | None) -> Output:
        parts = [
            read_columns(lay.part(ENCODED, i), parallel.META_COLUMNS) for i in range(plan.n_parts)
        ]
        layout, summary = parallel.plan_layout(parts, cfg.shards)
        layout_bytes, summary_bytes = parquet_bytes(layout), json_bytes(summary)
        return Output(
            {lay.packing_layout: layout_bytes, lay.packing_summary: summary_bytes},
            {split: s["rows"] for split, s in summary.items()},
            output=_digest(*(hashlib.sha256(b).hexdigest() for b in (layout_bytes, summary_bytes))),
        )

    def part_range(w: int | None) -> range:
        assert w is not None
        return range(w * plan.n_parts // writers, (w + 1) * plan.n_parts // writers)

    def pack_compute(w: int | None) -> Output:
        parts = part_range(w)
        layout = read_parquet_rows(
            lay.packing_layout, [("part", ">=", parts.start), ("part", "<", parts.stop)]
        )
        info, _ = tokenizer_info(local_copy(lay.tokenizer_model), cfg.shards.add_bos)
        pieces = parallel.pack_range(
            {i: read_parquet(lay.part(ENCODED, i)) for i in parts},
            layout,
            read_json(lay.packing_summary),
            cfg.shards,
            writers,
            (info.bos_id, info.eos_id),
            target(),
        )
        return Output({lay.pieces(w): pieces}, {"pieces": pieces.num_rows})

    def write_compute(w: int | None) -> Output:
        pieces = pa.concat_tables(
            [read_parquet_rows(lay.pieces(k), [("writer", "=", w)]) for k in range(writers)]
        ).cast(parallel.PIECES_SCHEMA)
        info, _ = tokenizer_info(local_copy(lay.tokenizer_model), cfg.shards.add_bos)
        files, summary = parallel.write_group(
            pieces,
            read_json(lay.packing_summary),
            cfg.shards,
            token_dtype(info.vocab_size),
            info.pad_id,
        )
        out: dict[str, Content] = {lay.writer_summary(w): json_bytes(summary)}
        out.update({lay.shard_file(rel): data for rel, data in files.items()})
        return Output(out, {"files": len(files)})

    def manifest_compute(_: int | None) -> Output:
        info, model = tokenizer_info(local_copy(lay.tokenizer_model), cfg.shards.add_bos)
        manifest = parallel.assemble_manifest(
            read_json(lay.packing_summary),
            [read_json(lay.writer_summary(w)) for w in range(writers)],
            cfg.shards,
            info,
            token_dtype(info.vocab_size),
            target(),
            cfg.name,
        )
        data = manifest_bytes(manifest)
        splits = {
            name: {"sequences": s.sequences, "tokens": s.tokens, "files": len(s.files)}
            for name, s in manifest.splits.items()
        }
        return Output(
            {lay.shard_file(TOKENIZER_NAME): model, lay.shard_file(MANIFEST_NAME): data},
            {"splits": splits},
            output=hashlib.sha256(data).hexdigest(),
        )

    def tasks() -> int:
        return writers

    plan.steps += [
        Step(
            "shards.plan",
            REDUCE,
            ("encode",),
            lambda _: lay.packing_marker,
            lambda _: (encoded_hash(range(plan.n_parts)), code),
            plan_compute,
        ),
        Step(
            "shards.pack",
            BUCKETS,
            ("encode", "tokenizer", "mix.plan", "shards.plan"),
            lay.pieces_marker,
            lambda w: (
                _digest(
                    encoded_hash(part_range(w)),
                    output_hash(lay.packing_marker),
                    output_hash(lay.tokenizer_marker),
                    output_hash(lay.mix_plan_marker),
                ),
                _digest(code, f"pack {w} of {writers}"),
            ),
            pack_compute,
            tasks=tasks,
            reads=part_range,
        ),
        Step(
            "shards.write",
            BUCKETS,
            ("shards.pack",),
            lay.writer_marker,
            lambda w: (
                _digest(*(output_hash(lay.pieces_marker(k)) for k in range(writers))),
                _digest(code, f"write {w} of {writers}"),
            ),
            write_compute,
            tasks=tasks,
        ),
        Step(
            "shards",
            REDUCE,
            ("encode", "mix.plan", "tokenizer", "shards.write"),
            lambda _: lay.shards_marker,
            lambda _: (
                _digest(
                    encoded_hash(range(plan.n_parts)),
                    *(output_hash(lay.writer_marker(w)) for w in range(writers)),
                ),
                _digest(shards_hash, code),
            ),
            manifest_compute,
        ),
    ]


_MIX_COLUMNS = ["id", "text", "domain", "lang"]


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _doc_output(
    lay: RunLayout, stage: str, i: int, result: StageResult, extra: dict | None = None
) -> Output:
    """A document stage's part: kept, removed and quarantined rows (counters checked)."""
    return Output(
        {
            lay.part(stage, i): result.kept,
            lay.part(stage, i, "removed"): result.removed,
            lay.part(stage, i, "quarantine"): result.quarantine,
        },
        result.stats.check().to_dict(),
        extra=extra or {},
    )


def _fit_needed(info: _StageInfo) -> bool:
    fit = getattr(info.stage, "fit", None)
    return fit is not None and fit.needed(info.cfg)


def _add_fit_step(plan: Plan, info: _StageInfo, fit: Fit) -> str:
    """The reduce step ``<stage>.<fit>``: the fit over the kept parts of ``fit.reads``."""
    lay, name = plan.layout, f"{info.name}.{fit.name}"

    def fp(_: int | None) -> tuple[str, str]:
        inputs = _digest(*(output_hash(lay.marker(fit.reads, i)) for i in range(plan.n_parts)))
        code = code_version(fit.fit, *fit.modules)
        return inputs, _digest(config_hash(fit.options(info.cfg)), code)

    def compute(_: int | None) -> Output:
        result = fit.fit([lay.part(fit.reads, i) for i in range(plan.n_parts)], info.cfg)
        files = {lay.fit_file(info.name, n): data for n, data in result.files.items()}
        primary = hashlib.sha256(result.files[result.output]).hexdigest()
        return Output(files, dict(result.stats), output=primary)

    plan.steps.append(
        Step(name, REDUCE, (fit.reads,), lambda _: lay.fit_marker(info.name, fit.name), fp, compute)
    )
    return name


def _add_stage_steps(plan: Plan, info: _StageInfo, fit_step: str | None) -> None:
    """A per-part stage: one map step; a global stage: map, reduce, apply."""
    lay, stage, name, previous = plan.layout, info.stage, info.name, info.previous
    functions = (getattr(stage, f, None) for f in ("score", "rules", "map", "reduce"))
    code = code_version(*functions, *stage.modules)

    sharded = isinstance(stage, GlobalStage) and stage.bucket is not None
    # how a sharded reduce is cut changes how it runs, not its result: not in the stage's hash
    options = {k: v for k, v in info.options.items() if not (sharded and k in BUCKET_OPTIONS)}

    def stage_cfg() -> tuple[BaseModel, str]:
        """The stage's config (with its fitted files) and its config hash."""
        extra: dict[str, str] = {}
        cfg = info.cfg
        if fit_step is not None:
            fit = stage.fit
            cfg = fit.use(cfg, lambda file: lay.fit_file(name, file))
            extra = {"model": output_hash(lay.fit_marker(name, fit.name))}
        return cfg, config_hash({"stage": name, "options": options, "code": code, **extra})

    def prev_hash(i: int | None) -> str:
        return output_hash(lay.marker(previous, i))

    fit_inputs = (fit_step,) if fit_step else ()
    if not isinstance(stage, GlobalStage):
        plan.steps.append(
            Step(
                name,
                MAP,
                (previous, *fit_inputs),
                lambda i: lay.marker(name, i),
                lambda i: (prev_hash(i), stage_cfg()[1]),
                lambda i: _doc_output(
                    lay, name, i, stage.run(read_parquet(lay.part(previous, i)), stage_cfg()[0])
                ),
                name,
            )
        )
        return

    shuffled = sharded and stage.shuffle is not None

    def map_compute(i: int | None) -> Output:
        cfg = stage_cfg()[0]
        table = stage.map(read_parquet(lay.part(previous, i)), cfg)
        files: dict[str, Content] = {lay.map_part(name, i): table}
        if shuffled:  # the key-range shuffle: its keys by key, read by range
            keys = stage.shuffle(table, cfg)
            files[lay.map_keys(name, i)] = parquet_bytes(keys, row_group_size=SHUFFLE_ROW_GROUP)
        return Output(files, {"rows": table.num_rows})

    def reduce_compute(_: int | None) -> Output:
        urls = [lay.map_part(name, i) for i in range(plan.n_parts)]
        table = stage.reduce(urls, stage_cfg()[0])
        return Output({lay.state(name): table}, {"rows": table.num_rows})

    def apply_fp(i: int | None) -> tuple[str, str]:
        return _digest(prev_hash(i), output_hash(lay.state_marker(name))), stage_cfg()[1]

    def apply_compute(i: int | None) -> Output:
        table = read_parquet(lay.part(previous, i))
        result = stage.run(table, read_parquet(lay.state(name)), stage_cfg()[0])
        return _doc_output(lay, name, i, result)

    def maps_hash() -> str:
        return _digest(*(output_hash(lay.map_marker(name, i)) for i in range(plan.n_parts)))

    plan.steps.append(
        Step(
            f"{name}.map",
            MAP,
            (previous, *fit_inputs),
            lambda i: lay.map_marker(name, i),
            lambda i: (prev_hash(i), stage_cfg()[1]),
            map_compute,
        )
    )
    if sharded:
        _add_bucket_steps(plan, info, stage_cfg, maps_hash)
    else:
        plan.steps.append(
            Step(
                f"{name}.reduce",
                REDUCE,
                (f"{name}.map",),
                lambda _: lay.state_marker(name),
                lambda _: (maps_hash(), stage_cfg()[1]),
                reduce_compute,
                cpus=stage.reduce_threads(info.cfg),
            )
        )
    plan.steps += [
        Step(
            name,
            MAP,
            (previous, f"{name}.reduce"),
            lambda i: lay.marker(name, i),
            apply_fp,
            apply_compute,
            name,
        ),
    ]


def _counted(slices: Iterable[pa.Table], stats: dict[str, Any]) -> Iterator[pa.Table]:
    """The slices, adding their rows to ``stats["rows"]`` as they are written (the runner
    reads a step's stats after writing its files)."""
    for piece in slices:
        stats["rows"] += piece.num_rows
        yield piece


def n_buckets(plan: Plan, stage: str, cfg: Any) -> int:
    """The bucket tasks of a sharded reduce: the stage's ``buckets``, else one per
    ``docs_per_bucket`` documents of its map outputs (1 before the map has run)."""
    if cfg.buckets:
        return cfg.buckets
    try:
        docs = 0
        for i in range(plan.n_parts):
            marker = plan.layout.map_marker(stage, i)
            if not exists(marker):
                return 1
            docs += int(read_json(marker)["stats"]["rows"])
    except NotDone:
        return 1
    return cfg.n_buckets(docs)


def _add_bucket_steps(
    plan: Plan,
    info: _StageInfo,
    stage_cfg: Callable[[], tuple[BaseModel, str]],
    maps_hash: Callable[[], str],
) -> None:
    """A sharded reduce: ``<stage>.buckets`` (one task per bucket of keys: an edge list each)
    and ``<stage>.reduce`` (the components over all edge lists -> the state), so that both
    executors run it as they run any step."""
    lay, stage, name = plan.layout, info.stage, info.name

    def tasks() -> int:
        return n_buckets(plan, name, info.cfg)

    def map_urls() -> list[str]:
        return [lay.map_part(name, i) for i in range(plan.n_parts)]

    def bucket_fp(b: int | None) -> tuple[str, str]:
        return maps_hash(), _digest(stage_cfg()[1], f"bucket {b} of {tasks()}")

    def bucket_compute(b: int | None) -> Output:
        extra = {}
        if stage.shuffle is not None:  # the map wrote its keys by key: read only this range
            extra["keys"] = [lay.map_keys(name, i) for i in range(plan.n_parts)]
        edges = stage.bucket(map_urls(), stage_cfg()[0], b, tasks(), **extra)
        return Output({lay.bucket_edges(name, b): edges}, {"edges": edges.num_rows})

    def components_fp(_: int | None) -> tuple[str, str]:
        edges = _digest(*(output_hash(lay.bucket_marker(name, b)) for b in range(tasks())))
        return _digest(maps_hash(), edges), stage_cfg()[1]

    def components_compute(_: int | None) -> Output:
        edges = [lay.bucket_edges(name, b) for b in range(tasks())]
        state = stage.components(map_urls(), edges, stage_cfg()[0])
        stats: dict[str, Any] = {"rows": 0, "buckets": len(edges)}
        if isinstance(state, TableSlices):  # written as they come: rows counted meanwhile
            state = TableSlices(state.schema, _counted(state.slices, stats))
        else:
            stats["rows"] = state.num_rows
        return Output({lay.state(name): state}, stats)

    plan.steps += [
        Step(
            f"{name}.buckets",
            BUCKETS,
            (f"{name}.map",),
            lambda b: lay.bucket_marker(name, b),
            bucket_fp,
            bucket_compute,
            tasks=tasks,
        ),
        Step(
            f"{name}.reduce",
            REDUCE,
            (f"{name}.map", f"{name}.buckets"),
            lambda _: lay.state_marker(name),
            components_fp,
            components_compute,
            cpus=stage.reduce_threads(info.cfg),
        ),
    ]


# --- before anything runs ----------------------------------------------------------------------


def check_data_options(cfg: PipelineConfig, parts: list[list[InputFile]]) -> None:
    """Options that name data, checked before extraction (or Ray, or Prefect) starts: every
    file a stage option names (``FILE_OPTION``: models, evaluation files) exists, and the fits
    a run needs find their data among the input files (``Fit.check``). Raises ConfigError with
    one line per problem, each naming its key."""
    from curate.config import ConfigError, file_options

    files = [f for part in parts for f in part]
    problems: list[str] = []
    for k, info in enumerate(_stage_infos(cfg)):
        where = f"stages[{k}].options"
        for name in sorted(file_options(type(info.cfg))):
            value = getattr(info.cfg, name)
            missing = [
                p for p in (value if isinstance(value, list) else [value]) if p and not exists(p)
            ]
            if missing:
                problems.append(f"{where}.{name}: not found: {', '.join(map(str, missing))}")
        fit = getattr(info.stage, "fit", None)
        if fit is not None and fit.check is not None and fit.needed(info.cfg):
            problem = fit.check(info.cfg, files)
            if problem:
                problems.append(f"{where}.{problem}")
    if problems:
        raise ConfigError(f"{cfg.name}: " + "\n".join(problems))


def step_status(plan: Plan, step: Step, index: int | None) -> str:
    """``done``, or why the step will run: ``missing`` (never ran), ``input changed``,
    ``config or code changed``, ``after <step>`` (an input is still to run)."""
    marker = step.marker(index)
    if not exists(marker):
        return "missing"
    try:
        input_fp, cfg_hash = step.fingerprint(index)
    except NotDone as e:
        return f"after {e}"
    recorded = read_json(marker)
    if recorded.get("config_hash") != cfg_hash:
        return "config or code changed"
    if recorded.get("input_fingerprint") != input_fp:
        return "input changed"
    return "done"


STALE_REASONS = ("config or code changed", "input changed")


@dataclass
class StepState:
    """Where one step of a run stands: ``state`` is ``done`` (every call's marker matches),
    ``stale`` (a call ran with another config, code or input, or a step it reads is stale)
    or ``pending`` (a call never ran); ``counts``: calls per reason."""

    step: Step
    calls: int
    counts: dict[str, int]
    state: Literal["done", "stale", "pending"]

    def line(self) -> str:
        kind = (
            f"{self.step.kind} × {self.calls}"
            if self.step.kind in (MAP, BUCKETS)
            else self.step.kind
        )
        summary = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        return f"  {self.step.name:<22} {kind:<10} {self.state:<8} ({summary})"


def step_states(plan: Plan, other_inputs: bool = False) -> list[StepState]:
    """Every step's :class:`StepState`, in order: the one place ``--dry-run``, ``status`` and
    ``run``'s stale-step warning read. A done step after one that will run is ``stale``
    (``after <step>``); ``other_inputs``: the input files changed, every call is stale."""
    out: list[StepState] = []
    running: dict[str, str] = {}  # step -> its state, for the steps that will run
    for step in plan.steps:
        counts: dict[str, int] = {}
        for i in plan.indices(step):
            status = "input changed" if other_inputs else step_status(plan, step, i)
            upstream = sorted(set(step.inputs) & set(running))
            if status.startswith("after") or (status == "done" and upstream):
                status = f"after {', '.join(upstream) or 'inputs'}"
            counts[status] = counts.get(status, 0) + 1
        if set(counts) == {"done"}:
            state = "done"
        elif "missing" in counts or any(
            s.startswith("after")
            and running.get(s.removeprefix("after ").split(", ")[0]) == "pending"
            for s in counts
        ):
            state = "pending"
        else:
            state = "stale"
        if state != "done":
            running[step.name] = state
        out.append(StepState(step, len(plan.indices(step)), counts, state))
    return out


def _planned_parts(cfg: PipelineConfig, plan: Plan, parts: list[list[InputFile]]) -> bool:
    """Give ``plan`` the parts ``parts``; True when they differ from the recorded ones."""
    planned = [[f.model_dump(mode="json") for f in p] for p in parts]
    recorded = read_json(plan.layout.parts)["parts"] if exists(plan.layout.parts) else None
    plan.__dict__["parts"] = parts
    return recorded is not None and recorded != planned


def describe(cfg: PipelineConfig) -> str:
    """``sluice run --dry-run``: the parts, then every step with what is done and what will
    run, and why (a step after one that runs runs too, unless its inputs come out the same)."""
    parts = list_parts(cfg)
    check_data_options(cfg, parts)
    plan = build_plan(cfg)
    other_inputs = _planned_parts(cfg, plan, parts)
    n_files = sum(len(p) for p in parts)
    lines = [f"run {cfg.name}: {n_files} input files in {len(parts)} parts → {cfg.run_url}"]
    if other_inputs:
        lines.append("  the input files changed since the last run: every step runs")
    for s in step_states(plan, other_inputs):
        verdict = "done" if s.state == "done" else "will run"
        summary = ", ".join(f"{n} {r}" for r, n in sorted(s.counts.items()))
        kind = f"{s.step.kind} × {s.calls}" if s.step.kind in (MAP, BUCKETS) else s.step.kind
        lines.append(f"  {s.step.name:<22} {kind:<10} {verdict:<9} ({summary})")
    return "\n".join(lines)


def run_states(cfg: PipelineConfig) -> tuple[Plan, list[StepState], bool]:
    """The states of the steps of ``cfg``'s run directory as it stands (the recorded parts
    unless the inputs can be listed again); returns (plan, states, input files changed)."""
    plan = build_plan(cfg)
    recorded = plan.parts if exists(plan.layout.parts) else None
    try:
        parts = list_parts(cfg)
    except (OSError, ValueError):
        parts = recorded
    if parts is None:
        raise NotDone(f"{cfg.run_url} has not been run (no {plan.layout.parts})")
    other_inputs = _planned_parts(cfg, plan, parts)
    return plan, step_states(plan, other_inputs), other_inputs


def _doc_counts(plan: Plan, step: Step) -> str:
    """``N in → K kept, R removed, Q quarantined`` over the done parts of a document stage."""
    totals = {"docs_in": 0, "kept": 0, "removed": 0, "quarantined": 0}
    for i in plan.indices(step):
        marker = step.marker(i)
        if not exists(marker):
            continue
        stats = read_json(marker).get("stats", {})
        for k in totals:
            v = stats.get(k, 0)
            totals[k] += sum(v.values()) if isinstance(v, dict) else int(v or 0)
    return (
        f"{totals['docs_in']:,} in → {totals['kept']:,} kept, {totals['removed']:,} removed, "
        f"{totals['quarantined']:,} quarantined"
    )


def describe_status(cfg: PipelineConfig) -> str:
    """``sluice status RUN``: every step done / stale / pending, with its calls per reason and
    (document stages) the documents in, kept, removed and quarantined."""
    plan, states, other_inputs = run_states(cfg)
    lines = [f"run {cfg.name}: {plan.n_parts} parts in {cfg.run_url}"]
    if other_inputs:
        lines.append("  the input files changed since the last run: every step is stale")
    for s in states:
        line = s.line()
        if s.step.checks and s.state != "pending":
            line += f"  {_doc_counts(plan, s.step)}"
        lines.append(line)
    stale = [s.step.name for s in states if s.state == "stale"]
    if stale:
        lines.append(f"stale: {', '.join(stale)} (`sluice run` recomputes them)")
    return "\n".join(lines)
