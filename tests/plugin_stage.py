"""A plugin stage for the tests: its own config model and a fit step, in one module plus one
registration line; the executors (in-process and the Prefect flow) run it unchanged.

``short_for_domain`` learns, from the run's extracted documents, the median length of each
domain's documents (the fit, written as ``<run>/short_for_domain/medians.json``), then removes
documents shorter than ``fraction`` of their domain's median (reason ``short_for_domain``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate.stage import Fit, FitResult, Rules, Stage
from curate.stages import register
from curate.storage import read_columns, read_json

MEDIANS = "medians.json"


class ShortForDomainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(0.05, ge=0.0, le=1.0)
    medians: str | None = None  # filled in by the fit: the URL of medians.json


def fit_medians(parts: list[str], cfg: ShortForDomainConfig) -> FitResult:
    docs = pa.concat_tables(read_columns(u, ["text", "domain"]) for u in parts)
    lengths = pc.utf8_length(docs["text"]).to_numpy(zero_copy_only=False)
    domains = np.asarray(docs["domain"].to_pylist(), dtype=object)
    medians = {d: float(np.median(lengths[domains == d])) for d in sorted(set(domains))}
    data = json.dumps(medians, sort_keys=True).encode()
    return FitResult({MEDIANS: data}, {"domains": len(medians)}, MEDIANS)


def score(table: pa.Table, cfg: ShortForDomainConfig) -> pa.Table:
    medians = read_json(cfg.medians)
    limit = [cfg.fraction * medians.get(d, 0.0) for d in table["domain"].to_pylist()]
    ratio = pa.array(limit, pa.float64())
    return table.append_column("domain_min_chars", ratio)


def rules(table: pa.Table, cfg: ShortForDomainConfig) -> Rules:
    lengths = pc.utf8_length(table["text"]).to_numpy(zero_copy_only=False)
    return {"short_for_domain": lengths < table["domain_min_chars"].to_numpy()}


def _use(cfg: ShortForDomainConfig, url: Callable[[str], str]) -> ShortForDomainConfig:
    return cfg.model_copy(update={"medians": url(MEDIANS)})


MEDIAN_FIT = Fit(
    name="medians", needed=lambda c: True, options=lambda c: {}, fit=fit_medians, use=_use
)
register(Stage("short_for_domain", ShortForDomainConfig, score, rules, fit=MEDIAN_FIT))
