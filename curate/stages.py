"""The registry of per-document stages by config name (one import per stage module)."""

from __future__ import annotations

from curate.stage import Stage

STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} registered twice")
    STAGES[stage.name] = stage
    return stage
