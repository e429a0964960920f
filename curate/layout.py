"""The run directory's layout: every path of a run, for the steps that write it and for the
readers (reports, ``inspect``, ``status``, the trainer's shard lookup) alike.

Run directory (``cfg.run_url``, a local path or any fsspec URL)::

    config.json                      the resolved config (+ hash)
    parts.json                       the input files of every part
    run.lock                         the run that owns the directory now (pid, host)
    extract/part-NNNNN.parquet       kept documents (DOC_SCHEMA + score columns)
            part-NNNNN.removed.parquet     removed documents + removed_by + reason
            part-NNNNN.quarantine.parquet  QUARANTINE_SCHEMA
            part-NNNNN.done.json           marker: input_fingerprint, config_hash, stats, output
    <stage>/...                      the same for every configured stage, in order
    <stage>/<file>, <stage>/<fit>.done.json   files a stage fits on the run's data (quality:
                                     model.bin + quality_stats.json, marker train.done.json)
    <global stage>/map/part-NNNNN.parquet (+ .done.json)   per-part summaries
                  /map/part-NNNNN.keys.parquet      their keys sorted by key (near dedup)
                  /buckets/bucket-NNNNN.parquet     a sharded reduce's edge lists
                  /state.parquet (+ state.done.json)      the reduce's state table
    mix/plan.json (+ plan.done.json), mix/part-NNNNN.parquet (selected docs + repeats)
    tokenizer/tokenizer.model (+ .json summary, done.json)
    encoded/part-NNNNN.parquet       token ids per document (curate.shards.write.ENCODED_SCHEMA)
    shards/manifest.json, shards/{train,val}/shard-NNNNN.arrow, shards/tokenizer.model
    packing/layout.parquet, summary.json (+ plan.done.json)   with ``shards.writers`` > 1: the
            stream layout, pieces-NNNNN.parquet (+ .done.json) per range of encoded parts,
            writer-NNNNN.json (+ .done.json) per writer (``curate.shards.parallel``)
    stats.json, timings.json, funnel.md, funnel.png, mixture.{json,md,png}, report.html
    tasks.json                       which Ray node ran each task (the flow only)
"""

from __future__ import annotations

from dataclasses import dataclass

from curate.storage import exists, join, part_name, read_json

EXTRACT_STAGE = "extract"
MIX, TOKENIZER, ENCODED, SHARDS = "mix", "tokenizer", "encoded", "shards"
PACKING = "packing"  # the shard writer's intermediate files when it runs as several tasks
# Directories of the steps after the filter stages (a stage may not take one of these names).
TAIL_STEPS = (MIX, TOKENIZER, ENCODED, SHARDS, PACKING)
PART_KINDS = ("kept", "removed", "quarantine")
TOKENIZER_FILE = "tokenizer.model"


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run directory (``root``: a local path or fsspec URL)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", str(self.root).rstrip("/"))

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def relative(self, url: str) -> str:
        """``url`` relative to the run directory (as done markers record their outputs)."""
        if not url.startswith(self.root + "/"):
            raise ValueError(f"{url} is not inside the run directory {self.root}")
        return url[len(self.root) + 1 :]

    # --- run-level files ---
    @property
    def config(self) -> str:
        return self.path("config.json")

    @property
    def parts(self) -> str:
        return self.path("parts.json")

    @property
    def lock(self) -> str:
        return self.path("run.lock")

    @property
    def stats(self) -> str:
        return self.path("stats.json")

    @property
    def timings(self) -> str:
        return self.path("timings.json")

    @property
    def tasks(self) -> str:
        return self.path("tasks.json")

    @property
    def report_html(self) -> str:
        return self.path("report.html")

    def report_file(self, name: str) -> str:
        """funnel.md, funnel.png, mixture.json, mixture.md, mixture.png."""
        return self.path(name)

    # --- document stages (and mix/encoded parts) ---
    def part(self, step: str, index: int, kind: str = "kept") -> str:
        """``<step>/part-NNNNN[.removed|.quarantine].parquet``."""
        suffix = "" if kind in ("", "kept") else f".{kind}"
        return self.path(step, f"{part_name(index)}{suffix}.parquet")

    def marker(self, step: str, index: int) -> str:
        return self.path(step, f"{part_name(index)}.done.json")

    # --- global stages ---
    def map_part(self, stage: str, index: int) -> str:
        return self.path(stage, "map", f"{part_name(index)}.parquet")

    def map_keys(self, stage: str, index: int) -> str:
        """A map's keys sorted by key (the key-range shuffle of a sharded reduce)."""
        return self.path(stage, "map", f"{part_name(index)}.keys.parquet")

    def map_marker(self, stage: str, index: int) -> str:
        return self.path(stage, "map", f"{part_name(index)}.done.json")

    def bucket_edges(self, stage: str, bucket: int) -> str:
        return self.path(stage, "buckets", f"bucket-{bucket:05d}.parquet")

    def bucket_marker(self, stage: str, bucket: int) -> str:
        return self.path(stage, "buckets", f"bucket-{bucket:05d}.done.json")

    def state(self, stage: str) -> str:
        return self.path(stage, "state.parquet")

    def state_marker(self, stage: str) -> str:
        return self.path(stage, "state.done.json")

    # --- what a stage fits on the run's data ---
    def fit_file(self, stage: str, name: str) -> str:
        return self.path(stage, name)

    def fit_marker(self, stage: str, fit: str) -> str:
        return self.path(stage, f"{fit}.done.json")

    # --- tail steps ---
    @property
    def mix_plan(self) -> str:
        return self.path(MIX, "plan.json")

    @property
    def mix_plan_marker(self) -> str:
        return self.path(MIX, "plan.done.json")

    @property
    def tokenizer_model(self) -> str:
        return self.path(TOKENIZER, TOKENIZER_FILE)

    @property
    def tokenizer_marker(self) -> str:
        return self.path(TOKENIZER, "done.json")

    @property
    def shards_dir(self) -> str:
        return self.path(SHARDS)

    @property
    def shards_marker(self) -> str:
        return self.path(SHARDS, "done.json")

    def shard_file(self, rel: str) -> str:
        """A file of the shard directory (``train/shard-00000.arrow``, ``manifest.json``)."""
        return self.path(SHARDS, rel)

    # --- the shard writer as several tasks ---
    @property
    def packing_layout(self) -> str:
        return self.path(PACKING, "layout.parquet")

    @property
    def packing_summary(self) -> str:
        return self.path(PACKING, "summary.json")

    @property
    def packing_marker(self) -> str:
        return self.path(PACKING, "plan.done.json")

    def pieces(self, task: int) -> str:
        return self.path(PACKING, f"pieces-{task:05d}.parquet")

    def pieces_marker(self, task: int) -> str:
        return self.path(PACKING, f"pieces-{task:05d}.done.json")

    def writer_summary(self, writer: int) -> str:
        return self.path(PACKING, f"writer-{writer:05d}.json")

    def writer_marker(self, writer: int) -> str:
        return self.path(PACKING, f"writer-{writer:05d}.done.json")

    # --- readers' helpers (tolerate a run that stopped early) ---
    def n_parts(self) -> int:
        """Parts of the run (``parts.json``); 0 before the run was planned."""
        return len(read_json(self.parts)["parts"]) if exists(self.parts) else 0

    def saved_config(self) -> dict:
        """The run's resolved config (``config.json``: ``config``); {} when absent."""
        if not exists(self.config):
            return {}
        data = read_json(self.config)
        return data.get("config", data) if isinstance(data, dict) else {}

    def document_stages(self) -> list[str]:
        """``extract`` and the configured stages, in order (from ``config.json``)."""
        stages = self.saved_config().get("stages", [])
        return [EXTRACT_STAGE, *(s["name"] if isinstance(s, dict) else str(s) for s in stages)]

    def part_files(self, stage: str, kind: str = "kept") -> list[str]:
        """The existing part files of one kind of a stage, in part order."""
        urls = (self.part(stage, i, kind) for i in range(self.n_parts()))
        return [u for u in urls if exists(u)]


@dataclass(frozen=True)
class AblationLayout:
    """Paths of one ablation directory (``sluice ablate``; a local path: training reads shards
    with memory maps)::

        ablation.json, ablation.md       the report (per variant, per seed; differences)
        union/                           the run whose tokenizer every variant shares
        variants/<variant>/              each variant's run directory (a RunLayout)
        step-cache/<key>.json            which run computed a step call first (shared steps)
        eval/docs.parquet, eval/shards/  the common evaluation set (val split only)
        train/<variant>/data/            the variant's train shards + the eval set as val
        train/<variant>/seed-<s>/        one training run (final.json, metrics)
    """

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", str(self.root).rstrip("/"))

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    @property
    def union(self) -> str:
        return self.path("union")

    def variant(self, name: str) -> str:
        return self.path("variants", name)

    @property
    def step_cache(self) -> str:
        return self.path("step-cache")

    @property
    def eval_docs(self) -> str:
        return self.path("eval", "docs.parquet")

    @property
    def eval_shards(self) -> str:
        return self.path("eval", "shards")

    def train_data(self, variant: str) -> str:
        return self.path("train", variant, "data")

    def train_run(self, variant: str, seed: int) -> str:
        return self.path("train", variant, f"seed-{seed}")

    @property
    def report_json(self) -> str:
        return self.path("ablation.json")

    @property
    def report_md(self) -> str:
        return self.path("ablation.md")
