"""Orchestration settings of a job (sections ``ray`` and ``prefect`` of its config): where tasks
run and how Prefect retries them. They belong to flows/, not to curation: they are registered
with ``curate.config`` (validated at load time, never part of the config hash)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from curate.config import register_section


class RayConfig(BaseModel):
    """Where tasks run: a local Ray (address None) or a cluster ("auto", "ray://host:port")."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    object_store_memory: int = Field(256 * 1024 * 1024, ge=78 * 1024 * 1024)
    temp_dir: str | None = None  # local Ray's session dir (default: a fresh one under /tmp)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None or v == "auto" or re.fullmatch(r"(ray://)?[\w.\-]+:\d+", v):
            return v
        raise ValueError("address must be null, 'auto', 'host:port' or 'ray://host:port'")


class PrefectConfig(BaseModel):
    """Prefect settings of the run: the API server and task retries."""

    model_config = ConfigDict(extra="forbid")
    api_url: str | None = None  # None: $PREFECT_API_URL, else a local server started on demand
    start_server: bool = True  # start `sluice server --background` when no API is reachable
    task_retries: int = Field(2, ge=0)  # re-run a part whose Ray worker died
    retry_delay_seconds: float = Field(1.0, ge=0)
    # calls of a step per Prefect task, each still its own Ray task. "all" (default): one
    # Prefect task per step (or chain of per-part steps), run in the flow's own process, which
    # starts a Ray task per call (the UI: ``<step>-<n>-calls``, a progress artifact, a log line
    # per call done); a Prefect task costs ~0.14 CPU s (worker and server) that a Ray task does
    # not. N: a Prefect task on Ray per N calls (1: one per part, ``<step>-<part>``).
    parts_per_task: Annotated[int, Field(ge=1)] | Literal["all"] = "all"
    artifact_key: str = "sluice-funnel"


register_section("ray", RayConfig)
register_section("prefect", PrefectConfig)
