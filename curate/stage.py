"""The stage contract: score columns first, then a separate decide step; counters per reason.

A stage is ``score(table, cfg) -> table`` (same rows, new columns) plus ``rules(table, cfg)``, a
mapping ``reason -> boolean mask of rows to remove`` built from the configured thresholds. The
decide step applies the rules in order (a row is removed for the first reason that matches) and
returns kept rows, removed rows with their reason, quarantined rows, and the counters. Invariant,
checked on every result: ``docs_in == kept + sum(removed) + sum(quarantined)``.

A score function that fails on one document writes the failure into the optional ``_error``
column (null when fine); decide moves such rows to quarantine with that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from curate.schema import QUARANTINE_SCHEMA
from curate.storage import TableSlices

ERROR_COLUMN = "_error"
# ``json_schema_extra`` of a stage option that names files (a path, or a list of them): a relative
# one that the working directory lacks is looked up next to the config (``curate.config``).
FILE_OPTION: dict[str, Any] = {"file_option": True}

C = TypeVar("C", bound=BaseModel)
Rules = Mapping[str, np.ndarray]


class ConservationError(RuntimeError):
    """Documents were lost or invented: in != kept + removed + quarantined."""


@dataclass
class StageStats:
    """Counters of one stage over one part (or, merged, over a whole run)."""

    stage: str
    docs_in: int = 0
    bytes_in: int = 0
    kept: int = 0
    bytes_kept: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # kept documents the stage could not judge, by reason (toxicity: a language without a list)
    unjudged: dict[str, int] = field(default_factory=dict)

    @property
    def removed_total(self) -> int:
        return sum(self.removed.values())

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def check(self) -> StageStats:
        out = self.kept + self.removed_total + self.quarantined_total
        if self.docs_in != out:
            raise ConservationError(
                f"stage {self.stage!r}: {self.docs_in} documents in but {self.kept} kept + "
                f"{self.removed_total} removed {self.removed} + {self.quarantined_total} "
                f"quarantined {self.quarantined} = {out}"
            )
        return self

    def merge(self, other: StageStats) -> StageStats:
        if other.stage != self.stage:
            raise ValueError(f"cannot merge stats of {other.stage!r} into {self.stage!r}")
        merged = StageStats(
            stage=self.stage,
            docs_in=self.docs_in + other.docs_in,
            bytes_in=self.bytes_in + other.bytes_in,
            kept=self.kept + other.kept,
            bytes_kept=self.bytes_kept + other.bytes_kept,
            removed=_add_counts(self.removed, other.removed),
            quarantined=_add_counts(self.quarantined, other.quarantined),
            seconds=self.seconds + other.seconds,
            unjudged=_add_counts(self.unjudged, other.unjudged),
        )
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "docs_in": self.docs_in,
            "bytes_in": self.bytes_in,
            "kept": self.kept,
            "bytes_kept": self.bytes_kept,
            "removed": dict(sorted(self.removed.items())),
            "quarantined": dict(sorted(self.quarantined.items())),
            "seconds": round(self.seconds, 6),
        } | ({"unjudged": dict(sorted(self.unjudged.items()))} if self.unjudged else {})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageStats:
        return cls(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()})


def _add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


@dataclass
class StageResult:
    kept: pa.Table
    removed: pa.Table  # the batch's columns + removed_by + reason
    quarantine: pa.Table  # QUARANTINE_SCHEMA
    stats: StageStats


def text_bytes(table: pa.Table) -> int:
    """UTF-8 bytes of the ``text`` column."""
    if table.num_rows == 0 or "text" not in table.column_names:
        return 0
    return int(pc.sum(pc.binary_length(table["text"])).as_py() or 0)


def decide(table: pa.Table, rules: Rules, stage: str) -> StageResult:
    """Split ``table`` by ``rules`` (reason -> remove mask, first match wins) and count."""
    n = table.num_rows
    stats = StageStats(stage=stage, docs_in=n, bytes_in=text_bytes(table))
    reason = np.full(n, None, dtype=object)
    quarantined = np.zeros(n, dtype=bool)

    if ERROR_COLUMN in table.column_names:
        errors = np.asarray(table[ERROR_COLUMN].to_pylist(), dtype=object)
        quarantined = np.asarray([e is not None for e in errors], dtype=bool)
        reason[quarantined] = errors[quarantined]

    for name, mask in rules.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(
                f"stage {stage!r}: rule {name!r} mask has shape {mask.shape}, not ({n},)"
            )
        hit = mask & (reason == None)  # noqa: E711 - elementwise on an object array
        reason[hit] = name

    removed_mask = (reason != None) & ~quarantined  # noqa: E711
    kept_mask = reason == None  # noqa: E711

    base = table.drop_columns([ERROR_COLUMN]) if ERROR_COLUMN in table.column_names else table
    kept = base.filter(pa.array(kept_mask))
    removed = base.filter(pa.array(removed_mask))
    removed_reasons = reason[removed_mask].tolist()
    removed = removed.append_column(
        pa.field("removed_by", pa.string()), pa.array([stage] * removed.num_rows, pa.string())
    ).append_column(pa.field("reason", pa.string()), pa.array(removed_reasons, pa.string()))

    q_rows = table.filter(pa.array(quarantined))
    quarantine = pa.table(
        {
            "id": q_rows["id"] if q_rows.num_rows else pa.array([], pa.string()),
            "source": q_rows["source"] if q_rows.num_rows else pa.array([], pa.string()),
            "offset": q_rows["offset"] if q_rows.num_rows else pa.array([], pa.int64()),
            "stage": pa.array([stage] * q_rows.num_rows, pa.string()),
            "reason": pa.array(reason[quarantined].tolist(), pa.string()),
            "detail": pa.array([None] * q_rows.num_rows, pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )

    stats.kept = kept.num_rows
    stats.bytes_kept = text_bytes(kept)
    for r in removed_reasons:
        stats.removed[r] = stats.removed.get(r, 0) + 1
    for r in reason[quarantined].tolist():
        stats.quarantined[r] = stats.quarantined.get(r, 0) + 1
    return StageResult(kept=kept, removed=removed, quarantine=quarantine, stats=stats.check())


def _score_and_decide(
    name: str,
    table: pa.Table,
    score: Callable[[], pa.Table],
    rules: Callable[[pa.Table, Any], Rules] | None,
    cfg: Any,
    unjudged: Callable[[pa.Table, Any], Mapping[str, int]] | None = None,
) -> StageResult:
    """Score (same rows, new columns; checked), then decide with the rules; timed; count the
    documents the stage could not judge (``unjudged``)."""
    start = time.perf_counter()
    scored = score()
    if scored.num_rows != table.num_rows:
        raise ConservationError(
            f"stage {name!r}: score returned {scored.num_rows} rows for {table.num_rows}"
        )
    result = decide(scored, rules(scored, cfg) if rules else {}, name)
    if unjudged is not None:
        result.stats.unjudged = {k: v for k, v in unjudged(scored, cfg).items() if v}
    result.stats.seconds = time.perf_counter() - start
    return result


@dataclass(frozen=True)
class FitResult:
    """What a :class:`Fit` learned: files (name → bytes, stored as ``<run>/<stage>/<name>``),
    counters for its done marker, and the name of the file that identifies it (its hash goes
    into the stage's config hash, so a refitted model re-runs the stage)."""

    files: dict[str, bytes]
    stats: dict[str, Any]
    output: str


@dataclass(frozen=True)
class Fit(Generic[C]):
    """Something a stage learns from the run's own documents before it runs (the quality model,
    per-language thresholds): one reduce step ``<stage>.<name>`` over the kept parts of the
    document stage ``reads``, run right after that stage; the executors know nothing more.

    ``needed(cfg)``: whether this run fits at all (quality: only without a ``model_path``);
    ``options(cfg)``: the part of the config the fit depends on (hashed into its marker);
    ``fit(part_urls, cfg)``: the fit itself (deterministic); ``use(cfg, url)``: the stage's
    config with the fitted files filled in (``url(name)``: where the fit's file ``name`` lies); ``check(cfg, input_files)``: a
    problem with the options given the run's input files (``InputFile``), checked when the plan
    is built, before anything runs, or None.
    """

    name: str
    needed: Callable[[C], bool]
    options: Callable[[C], Any]
    fit: Callable[[list[str], C], FitResult]
    use: Callable[[C, Callable[[str], str]], C]
    check: Callable[[C, list[Any]], str | None] | None = None
    reads: str = "extract"
    modules: tuple[str, ...] = ()  # other modules the fit runs (their source is in its hash)


@dataclass(frozen=True)
class Stage(Generic[C]):
    """A per-document stage: ``score`` adds columns, ``rules`` turns thresholds into removals.

    ``rules`` is None for stages that only annotate or rewrite (PII redaction, say); ``fit``,
    when set, is learned from the run's documents first (:class:`Fit`).
    """

    name: str
    config: type[C]
    score: Callable[[pa.Table, C], pa.Table]
    rules: Callable[[pa.Table, C], Rules] | None = None
    # scored batch -> counts of documents it could not judge, by reason (StageStats.unjudged)
    unjudged: Callable[[pa.Table, C], Mapping[str, int]] | None = None
    fit: Fit[C] | None = None
    modules: tuple[str, ...] = ()  # other modules score/rules run (their source is hashed)

    def run(self, table: pa.Table, cfg: C) -> StageResult:
        return _score_and_decide(
            self.name, table, lambda: self.score(table, cfg), self.rules, cfg, self.unjudged
        )


@dataclass(frozen=True)
class GlobalStage(Generic[C]):
    """A stage that must see the whole run before deciding (dedup, say): map, reduce, apply.

    ``map`` turns each part into a compact summary table (signatures, hashes), written beside the
    part; ``reduce`` reads all summaries, in part order, into one state table (duplicates, cluster
    ids); ``score`` adds columns to each part from that state, and ``rules``/decide work as for
    :class:`Stage`. The plan (``curate.plan``) runs map per part and reduce once, as separate
    steps (or, with ``bucket``/``components``, as bucket tasks and a components step).
    """

    name: str
    config: type[C]
    map: Callable[[pa.Table, C], pa.Table]
    reduce: Callable[[list[str], C], pa.Table]  # URLs of the map outputs, in part order
    score: Callable[[pa.Table, pa.Table, C], pa.Table]  # (part, state, cfg) -> part + columns
    rules: Callable[[pa.Table, C], Rules] | None = None
    fit: Fit[C] | None = None
    modules: tuple[str, ...] = ()  # other modules map/reduce/score run (their source is hashed)
    # a sharded reduce (both or neither): ``bucket(map urls, cfg, b, n_buckets)`` -> edge list of
    # the keys in bucket b; ``components(map urls, edge lists, cfg)`` -> the state, whole or as
    # ``TableSlices`` (written as they come); the plan then runs ``cfg.n_buckets(docs)`` bucket
    # tasks and one components step instead of ``reduce``
    bucket: Callable[..., pa.Table] | None = None
    components: Callable[[list[str], list, C], pa.Table | TableSlices] | None = None
    # the key-range shuffle (with ``bucket``): ``shuffle(map output, cfg)`` -> its keys sorted
    # by key, written beside it by the map; the bucket tasks then get their urls (``keys=``)
    # and read only their range
    shuffle: Callable[[pa.Table, C], pa.Table] | None = None
    # cores the reduce (or components step) can use at once under ``cfg``: an executor that
    # shares a cluster reserves that many (a node's at most) and sets ``OMP_NUM_THREADS`` to
    # what it reserved, which the reduce's threads respect (``curate.dedup.containment``)
    reduce_threads: Callable[[C], int] = lambda cfg: 1

    def run(self, table: pa.Table, state: pa.Table, cfg: C) -> StageResult:
        return _score_and_decide(
            self.name, table, lambda: self.score(table, state, cfg), self.rules, cfg
        )
