"""The registry of stages by config name (one import per stage module).

Per-part stages are :class:`~curate.stage.Stage`; stages that must see the whole run first
(dedup) are :class:`~curate.stage.GlobalStage` (map per part, reduce once, apply per part).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from curate.stage import GlobalStage, Stage

STAGES: dict[str, Stage | GlobalStage] = {}


def register(stage: Stage | GlobalStage) -> Stage | GlobalStage:
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} registered twice")
    STAGES[stage.name] = stage
    return stage


def load_plugins(modules: Iterable[str]) -> None:
    """Import stage modules named in a config (``plugins``); each calls :func:`register` on
    import. Every process that looks a stage up (a Ray worker, say) imports them too."""
    for module in modules:
        importlib.import_module(module)


def _register_builtin() -> None:
    from curate.dedup.decontam import DECONTAM
    from curate.dedup.exact import EXACT_DEDUP
    from curate.dedup.minhash import NEAR_DEDUP
    from curate.dedup.paragraph import PARAGRAPH_DEDUP
    from curate.filters.heuristics import HEURISTICS
    from curate.filters.holdout import HOLDOUT
    from curate.filters.langid import LANGID
    from curate.filters.pii import PII
    from curate.filters.quality import QUALITY
    from curate.filters.toxicity import TOXICITY

    for stage in (LANGID, HEURISTICS, QUALITY, TOXICITY, PII, EXACT_DEDUP, NEAR_DEDUP, DECONTAM):
        register(stage)
    register(PARAGRAPH_DEDUP)
    register(HOLDOUT)


_register_builtin()
