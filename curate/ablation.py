"""The curation half of a data ablation (``sluice ablate``): variants of one job, curated with
their common steps computed once, one shared tokenizer, and a common evaluation set that no
variant trains on.

- **Variants**: each is a curation config (the ablation's ``base`` or its own ``config``) with
  ``set`` overrides (the ``--set`` syntax) and ``drop`` (stages removed). Each is curated as its
  own run directory (``AblationLayout.variant``).
- **Shared steps**: :class:`SharedSteps` wraps an executor's ``run_calls``: before a step call
  runs, its key (step, part, input fingerprint, config hash: the plan's own fingerprint) is
  looked up in ``step-cache/``; when another variant computed that call, its outputs (checked
  against the sha256 its marker records) and its marker are copied into this run instead of
  recomputed. So two variants that differ in one stage compute that stage and what reads its
  outputs; everything upstream is computed once.
- **Tokenizer**: the given one, else one trained by the ``union`` run (the base's inputs with
  only the hold-out stage: the union of what every variant may train on); every variant's
  tokenizer step copies it (``tokenizer.model_path``), so losses are in the same units.
- **Evaluation set**: the text the user names (``eval.inputs``), else the documents the
  ``holdout`` stage (first in every variant) removes: a deterministic slice by a hash of the
  document id, identical in every variant. :func:`check_disjoint` proves by document id that no
  variant's training shards hold an evaluation document.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from curate.config import ConfigError, PipelineConfig, format_errors, load_config
from curate.filters.holdout import HOLDOUT, HOLDOUT_REASON
from curate.layout import AblationLayout, RunLayout
from curate.mix import stable_uniform
from curate.plan import Plan, Step, _digest, json_bytes
from curate.readers import InputSpec, extract_part, list_inputs, plan_parts
from curate.runner import RunCalls, execute
from curate.shards.format import (
    Manifest,
    SplitInfo,
    load_manifest,
    open_shard,
    write_manifest,
)
from curate.shards.write import TOKENIZER_NAME, encode_part, write_shards
from curate.stage import GlobalStage
from curate.storage import (
    done_marker_matches,
    exists,
    read_bytes,
    read_json,
    read_parquet,
    write_bytes_atomic,
    write_json_atomic,
)
from curate.tokenizer import load_tokenizer

# --- the config --------------------------------------------------------------------------------


class VariantSpec(BaseModel):
    """One variant: a curation config with overrides; ``drop`` removes stages by name."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[\w.\-]+$")
    config: str | None = None  # default: the ablation's base
    set: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)


class EvalSpec(BaseModel):
    """The common evaluation set: named text (``inputs``), else a held-out slice."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[InputSpec] = Field(default_factory=list)
    holdout_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    seed: int = 0
    max_bytes: int | None = Field(2_000_000, ge=1)  # a deterministic subset of the documents
    # clean text: only the held-out documents this variant's per-document stages keep
    clean_like: str | None = None


class AblationConfig(BaseModel):
    """A data ablation: the same model, token budget and seeds trained on every variant."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("ablation", pattern=r"^[\w.\-]+$")
    run_dir: str | None = None  # default runs/ablation/<name>
    base: str | None = None  # the curation config variants start from
    set: list[str] = Field(default_factory=list)  # overrides of every variant's config
    variants: list[VariantSpec] = Field(min_length=2)
    baseline: str | None = None  # the variant the others are compared with (default: first)
    tokenizer: str | None = None  # a given SentencePiece model (default: trained on the union)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    train: str  # the training config (model, optimizer, batch)
    train_set: list[str] = Field(default_factory=list)
    tokens: int = Field(ge=1)  # the token budget of every training run
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _names(self) -> AblationConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants: names must be unique, got {names}")
        if "union" in names:
            raise ValueError("variants: 'union' is reserved (the shared tokenizer's run)")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline: {self.baseline!r} is not a variant ({names})")
        if self.eval.clean_like is not None and self.eval.clean_like not in names:
            raise ValueError(
                f"eval.clean_like: {self.eval.clean_like!r} is not a variant ({names})"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: must be distinct, got {self.seeds}")
        for i, v in enumerate(self.variants):
            if (v.config or self.base) is None:
                raise ValueError(f"variants[{i}].config: none given and no base")
        return self

    @property
    def baseline_name(self) -> str:
        return self.baseline or self.variants[0].name

    @property
    def root(self) -> str:
        return (self.run_dir or os.path.join("runs", "ablation", self.name)).rstrip("/")


def _located(p: str, base: Path) -> str:
    """A relative path missing from the working directory, read next to the ablation file."""
    if "://" in p or Path(p).is_absolute() or Path(p).exists():
        return p
    for root in (base, base.parent):
        if (root / p).exists():
            return str((root / p).resolve())
    return p


def load_ablation(path: str | Path, overrides: list[str] | None = None) -> AblationConfig:
    """An ablation config (YAML, ``--set`` overrides); relative file paths are read next to it
    when the working directory lacks them. ConfigError names the key."""
    from curate.config import load_model_yaml

    cfg = load_model_yaml(AblationConfig, path, overrides)
    here = Path(path).parent
    cfg.base = _located(cfg.base, here) if cfg.base else None
    cfg.train = _located(cfg.train, here)
    cfg.tokenizer = _located(cfg.tokenizer, here) if cfg.tokenizer else None
    for v in cfg.variants:
        v.config = _located(v.config, here) if v.config else None
    for p in (cfg.base, cfg.train, cfg.tokenizer, *(v.config for v in cfg.variants)):
        if p is not None and "://" not in p and not Path(p).exists():
            raise ConfigError(f"{path}: {p}: not found")
    return cfg


def ablation_from_configs(configs: list[str], **fields: Any) -> AblationConfig:
    """``sluice ablate --config A.yaml --vs B.yaml``: one variant per config (named after its
    file, made unique), the first the baseline."""
    names: list[str] = []
    for c in configs:
        stem = Path(c).stem
        name, k = stem, 2
        while name in names or name == "union":
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    try:
        return AblationConfig(
            variants=[VariantSpec(name=n, config=c) for n, c in zip(names, configs, strict=True)],
            **fields,
        )
    except ValidationError as e:
        raise ConfigError(format_errors(e, "sluice ablate", model=AblationConfig)) from None


def _edit(
    drop: list[str], holdout: dict[str, Any] | None, set_after: dict[str, Any]
) -> Callable[[dict[str, Any]], None]:
    """The edit of a variant's raw config: stages dropped, the hold-out stage first."""

    def edit(data: dict[str, Any]) -> None:
        stages = [s for s in data.get("stages") or [] if s.get("name") not in drop]
        unknown = set(drop) - {s.get("name") for s in data.get("stages") or []}
        if unknown:
            raise ConfigError(f"drop: no stage {', '.join(sorted(unknown))} in the config")
        if holdout is not None:
            stages = [{"name": HOLDOUT.name, "options": holdout}, *stages]
        data["stages"] = stages
        for key, value in set_after.items():
            node = data
            *head, last = key.split(".")
            for k in head:
                node = node.setdefault(k, {})
            node[last] = value

    return edit


def variant_config(
    abl: AblationConfig, variant: VariantSpec | None, tokenizer: str | None
) -> PipelineConfig:
    """The curation config of ``variant`` (None: the ``union`` run) in its run directory:
    the hold-out stage first (when no evaluation text is named), ``tokenizer`` shared, no val
    split of its own (the common evaluation set is the val split of every training run)."""
    lay = AblationLayout(abl.root)
    baseline = next(v for v in abl.variants if v.name == abl.baseline_name)
    source = (variant or baseline).config or abl.base
    name = variant.name if variant else "union"
    holdout = None if abl.eval.inputs else {"fraction": abl.eval.holdout_fraction,
                                             "seed": abl.eval.seed}  # fmt: skip
    after: dict[str, Any] = {
        "name": f"{abl.name}.{name}",
        "run_dir": lay.union if variant is None else lay.variant(name),
        "shards.val_fraction": 0.0,
        "tokenizer.model_path": tokenizer,
    }
    sets = [*abl.set, *(variant.set if variant else [])]
    if variant is None:  # the union: every document any variant may train on
        edit = _edit([], holdout, after)

        def union_edit(data: dict[str, Any]) -> None:
            data["stages"] = []
            edit(data)

        return load_config(source, sets, union_edit)
    return load_config(source, sets, _edit(variant.drop, holdout, after))


# --- shared steps ------------------------------------------------------------------------------

COMPUTED, SHARED, DONE = "computed", "shared", "done"


class SharedSteps:
    """A step cache keyed by the plan's fingerprints, shared by the runs of one ablation.

    ``wrap(run_calls, run)`` is an executor's ``run_calls`` that first copies every call another
    run computed with the same key from that run; ``ledger[run][step]`` counts the calls
    computed here, shared from another run, or done already (this run's own marker matched).
    """

    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir.rstrip("/")
        self.ledger: dict[str, dict[str, dict[str, int]]] = {}

    def key(self, step: Step, index: int | None) -> str:
        input_fp, cfg_hash = step.fingerprint(index)
        return _digest(step.name, str(index), input_fp, cfg_hash)

    def _entry(self, key: str) -> str:
        return f"{self.cache_dir}/{key}.json"

    def _share(self, plan: Plan, step: Step, index: int | None) -> dict[str, Any] | None:
        """Copy the call from the run that computed it; its counters, or None."""
        entry = self._entry(self.key(step, index))
        if not exists(entry):
            return None
        source = RunLayout(read_json(entry)["run"])
        if source.root == plan.layout.root:
            return None
        marker_url = step.marker(index)
        source_marker = source.path(plan.layout.relative(marker_url))
        input_fp, cfg_hash = step.fingerprint(index)
        if not done_marker_matches(source_marker, input_fp, cfg_hash):
            return None  # the source run recomputed it since with something else
        record = read_json(source_marker)
        files = {}
        for rel, want in record["outputs"].items():
            data = read_bytes(source.path(rel))
            if hashlib.sha256(data).hexdigest() != want["sha256"]:
                return None  # damaged in the source run: compute it here
            files[plan.layout.path(rel)] = data
        for url, data in files.items():
            write_bytes_atomic(data, url)
        write_bytes_atomic(json_bytes({**record, "shared_from": source.root}), marker_url)
        return {**record["stats"], "skipped": True, SHARED: True}

    def _remember(self, plan: Plan, step: Step, index: int | None) -> None:
        """This run holds the call now (it computed it, or its own marker matched): the source
        for the next run (an older entry may name a run that has recomputed it since)."""
        entry = self._entry(self.key(step, index))
        write_json_atomic({"run": plan.layout.root, "step": step.name, "index": index}, entry)

    def wrap(self, run_calls: RunCalls, run: str) -> RunCalls:
        def shared(plan: Plan, step: Step, indices: list[int | None]) -> list[dict[str, Any]]:
            counts = self.ledger.setdefault(run, {}).setdefault(
                step.name, {COMPUTED: 0, SHARED: 0, DONE: 0}
            )
            results: dict[int | None, dict[str, Any]] = {}
            todo = []
            for i in indices:
                input_fp, cfg_hash = step.fingerprint(i)
                own = done_marker_matches(step.marker(i), input_fp, cfg_hash)
                got = None if own or plan.forced(step.name) else self._share(plan, step, i)
                if got is None:
                    todo.append(i)
                else:
                    results[i] = got
                    counts[SHARED] += 1
            for i, r in zip(todo, run_calls(plan, step, todo) if todo else [], strict=True):
                results[i] = r
                counts[DONE if r.get("skipped") else COMPUTED] += 1
                self._remember(plan, step, i)
            return [results[i] for i in indices]

        return shared


def curate_variant(
    cfg: PipelineConfig, shared: SharedSteps, run_calls: RunCalls, run: str
) -> dict[str, Any]:
    """Curate one variant (or the union) with ``run_calls``, sharing steps; its stats.json."""
    return execute(cfg, shared.wrap(run_calls, run))[0]


# --- the evaluation set ------------------------------------------------------------------------


def _subset(docs: pa.Table, max_bytes: int | None, seed: int) -> pa.Table:
    """The documents in a stable hash order up to ``max_bytes`` of text (at least one)."""
    if docs.num_rows == 0:
        return docs
    order = np.argsort(stable_uniform(docs.column("id").to_pylist(), seed, "eval-order"))
    docs = docs.take(pa.array(order))
    if max_bytes is None:
        return docs
    sizes = pc.binary_length(docs.column("text").cast(pa.large_binary())).to_numpy()
    n = max(1, int(np.searchsorted(np.cumsum(sizes), max_bytes, side="right")))
    return docs.slice(0, n)


_EVAL_COLUMNS = ["id", "text", "source", "domain", "lang"]


def clean_like(docs: pa.Table, cfg: PipelineConfig) -> tuple[pa.Table, list[str]]:
    """The documents ``cfg``'s per-document stages keep, in order (the hold-out stage and
    global stages, dedup, are skipped: they judge a document against the run); fitted stages
    use the files the run fitted. Returns (kept, the stages applied)."""
    from curate.stages import STAGES

    lay, applied = RunLayout(cfg.run_url), []
    for k, entry in enumerate(cfg.stages):
        stage = STAGES[entry.name]
        if entry.name == HOLDOUT.name or isinstance(stage, GlobalStage):
            continue
        stage_cfg = cfg.stage_config(k)
        if stage.fit is not None and stage.fit.needed(stage_cfg):
            stage_cfg = stage.fit.use(stage_cfg, lambda f, n=entry.name: lay.fit_file(n, f))
        docs = stage.run(docs, stage_cfg).kept
        applied.append(entry.name)
    return docs, applied


def eval_documents(
    abl: AblationConfig, cfgs: dict[str, PipelineConfig]
) -> tuple[pa.Table, dict[str, Any]]:
    """The common evaluation documents: the named text, extracted, or the documents the
    baseline's hold-out stage removed (the same slice in every variant), kept by
    ``eval.clean_like``'s per-document stages when set, subset to ``eval.max_bytes``; with
    what was done to them."""
    baseline = cfgs[abl.baseline_name]
    info: dict[str, Any] = {"named": bool(abl.eval.inputs)}
    if abl.eval.inputs:
        files = list_inputs(abl.eval.inputs, baseline.domain_rules, [])
        if not files:
            paths = [s.path for s in abl.eval.inputs]
            raise ConfigError(f"eval.inputs: no files found for {paths}")
        parts = plan_parts(files, 64, 1 << 30)
        docs = pa.concat_tables(extract_part(p, baseline.extract).kept for p in parts)
    else:
        lay = RunLayout(baseline.run_url)
        tables = []
        for url in lay.part_files(HOLDOUT.name, "removed"):
            t = read_parquet(url)
            t = t.filter(pc.equal(t.column("reason"), HOLDOUT_REASON))
            tables.append(t.drop_columns(["removed_by", "reason", "holdout_u"]))
        docs = pa.concat_tables(tables, promote_options="permissive")
    info["held_out"] = docs.num_rows
    if abl.eval.clean_like is not None:
        docs, info["cleaned_by"] = clean_like(docs, cfgs[abl.eval.clean_like])
        info["clean_like"] = abl.eval.clean_like
    return _subset(docs.select(_EVAL_COLUMNS), abl.eval.max_bytes, abl.eval.seed), info


def piece_bytes(tokenizer: str) -> np.ndarray:
    """UTF-8 bytes each token id stands for (control pieces 0, byte pieces 1): Σ over a
    text's ids = the text's bytes (the tokenizer is byte-exact, ``curate.tokenizer``)."""
    sp = load_tokenizer(tokenizer)
    out = np.zeros(sp.get_piece_size(), dtype=np.int64)
    for i in range(sp.get_piece_size()):
        if sp.is_byte(i):
            out[i] = 1
        elif not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)):
            out[i] = len(sp.id_to_piece(i).replace("\u2581", " ").encode())
    return out


def write_eval_shards(
    docs: pa.Table, tokenizer: str, baseline: PipelineConfig, out_dir: str
) -> dict[str, Any]:
    """Encode the evaluation documents with the shared tokenizer into a shard directory whose
    val split is all of them; returns its sizes, with the UTF-8 bytes of the target tokens
    (what bits per byte divides by: every target token of every val row is evaluated)."""
    encoded = encode_part(docs, tokenizer, baseline.shards)
    encoded = encoded.set_column(
        encoded.schema.get_field_index("split"), "split", pa.array(["val"] * encoded.num_rows)
    )
    manifest = write_shards([encoded], out_dir, baseline.shards, tokenizer, source_run="eval")
    val = manifest.splits["val"]
    if val.sequences == 0:
        raise ValueError(
            f"the evaluation set ({docs.num_rows} documents) fills no sequence of "
            f"{baseline.shards.seq_len + 1} tokens: name more text or raise eval.max_bytes"
        )
    table = piece_bytes(tokenizer)
    target_bytes = target_tokens = 0
    for f in val.files:
        rows = open_shard(Path(out_dir) / f.path).column("input_ids").combine_chunks()
        ids = rows.values.to_numpy().reshape(len(rows), -1)[:, 1:]
        target_bytes += int(table[ids].sum())
        target_tokens += int(ids.size)
    return {
        "documents": docs.num_rows,
        "text_bytes": int(
            pc.sum(pc.binary_length(docs.column("text").cast(pa.large_binary()))).as_py() or 0
        ),
        "sequences": val.sequences,
        "target_tokens": target_tokens,
        "target_bytes": target_bytes,
        "doc_ids": docs.column("id").to_pylist(),
    }


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def training_data(variant_shards: str, eval_shards: str, out_dir: str) -> Manifest:
    """A shard directory for one variant's training runs: its train split, the common
    evaluation set as val (files linked, manifest rewritten). Same tokenizer and seq_len."""
    train, evals = load_manifest(variant_shards), load_manifest(eval_shards)
    if train.tokenizer.sha256 != evals.tokenizer.sha256 or train.seq_len != evals.seq_len:
        raise ValueError(
            f"{variant_shards} and {eval_shards}: tokenizer or seq_len differ "
            f"({train.tokenizer.sha256[:12]}/{train.seq_len} vs "
            f"{evals.tokenizer.sha256[:12]}/{evals.seq_len})"
        )
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    for source, split in (
        (variant_shards, train.splits["train"]),
        (eval_shards, evals.splits["val"]),
    ):
        for f in split.files:
            _link(Path(source) / f.path, out / f.path)
    _link(Path(variant_shards) / TOKENIZER_NAME, out / TOKENIZER_NAME)
    manifest = train.model_copy(
        update={"splits": {"train": train.splits["train"], "val": evals.splits["val"]}}
    )
    write_manifest(manifest, out)
    return manifest


def training_doc_ids(shards_dir: str) -> set[str]:
    """The ids of every document whose tokens a shard directory's train split holds."""
    ids: set[str] = set()
    manifest = load_manifest(shards_dir)
    for f in manifest.splits.get("train", SplitInfo()).files:
        column = open_shard(Path(shards_dir) / f.path).column("doc_ids")
        ids.update(pc.list_flatten(column).to_pylist())
    return ids


def check_disjoint(eval_ids: list[str], shards: dict[str, str]) -> dict[str, int]:
    """Evaluation documents found in each variant's training shards (by document id);
    ValueError naming the variants when any is. Returns the training documents per variant."""
    wanted = set(eval_ids)
    overlap: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for name, shards_dir in shards.items():
        ids = training_doc_ids(shards_dir)
        sizes[name] = len(ids)
        if ids & wanted:
            overlap[name] = len(ids & wanted)
    if overlap:
        raise ValueError(
            f"the evaluation set is not held out: documents of it are in the training shards of "
            f"{', '.join(f'{k} ({v})' for k, v in overlap.items())}"
        )
    return sizes


def steps_for(tokens: int, tokens_per_step: int) -> int:
    """Optimizer steps for a token budget (rounded up: every variant sees ≥ the budget)."""
    return max(1, math.ceil(tokens / tokens_per_step))
