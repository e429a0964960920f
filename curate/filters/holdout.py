"""Hold documents out for evaluation: a deterministic slice of the run's documents by a stable
hash of their id (``curate.mix.stable_uniform``, salt ``holdout``), removed with reason
``holdout``. ``sluice ablate`` puts it first in every variant, so the slice is the same for all
of them and is trained on by none: its removed rows are the ablation's common evaluation set.

Column: ``holdout_u`` (float64 in [0, 1): the document's draw; held out when < ``fraction``).
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curate.mix import stable_uniform
from curate.stage import Rules, Stage

HOLDOUT_REASON = "holdout"


class HoldoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(0.05, ge=0.0, lt=1.0)  # of the documents, in expectation
    seed: int = 0


def score(table: pa.Table, cfg: HoldoutConfig) -> pa.Table:
    u = stable_uniform(table.column("id").to_pylist(), cfg.seed, HOLDOUT_REASON)
    return table.append_column("holdout_u", pa.array(u, pa.float64()))


def rules(table: pa.Table, cfg: HoldoutConfig) -> Rules:
    u = table.column("holdout_u").to_numpy(zero_copy_only=False)
    return {HOLDOUT_REASON: u < cfg.fraction}


HOLDOUT = Stage(name="holdout", config=HoldoutConfig, score=score, rules=rules)
