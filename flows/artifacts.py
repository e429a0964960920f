"""Publish a run's report (``curate.html_report``) as Prefect artifacts.

One markdown artifact per report section (funnel, removals, languages, domains, dedup clusters,
mixture, tokenizer, loss), keyed ``<prefix>-<section>``: its table in markdown and its chart as
an inline ``data:image/png`` image (the server needs no file store and the UI no network).
Call it inside a flow run (the artifacts attach to that run) or outside one (they are still
listed under Artifacts by key).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from curate.html_report import Section, report_sections

_KEY_BAD = re.compile(r"[^a-z0-9-]+")


def artifact_key(*parts: str) -> str:
    """A valid Prefect artifact key (lowercase letters, digits, dashes) from free text."""
    key = _KEY_BAD.sub("-", "-".join(parts).lower()).strip("-")
    return re.sub(r"-{2,}", "-", key) or "sluice"


def publish_section(section: Section, prefix: str = "sluice", run_name: str = "") -> UUID:
    """One section as a markdown artifact (table + inline PNG)."""
    title = f"{section.title} ({run_name})" if run_name else section.title
    return create_markdown_artifact(
        markdown=section.markdown(image=True),
        key=artifact_key(prefix, section.key),
        description=title,
    )


def publish_report_artifacts(
    run_dir: str,
    extra: Sequence[Section] = (),
    prefix: str = "sluice",
    tables: bool = False,
) -> dict[str, UUID]:
    """Publish every report section of ``run_dir``; returns ``{section key: artifact id}``.

    With ``tables`` the sections' rows also go out as table artifacts (sortable in the UI).
    """
    return publish_sections(report_sections(run_dir, extra), run_dir, prefix, tables)


def publish_sections(
    sections: Sequence[Section], run_dir: str, prefix: str = "sluice", tables: bool = False
) -> dict[str, UUID]:
    """Publish report sections already computed (:func:`publish_report_artifacts`)."""
    run_name = run_dir.rstrip("/").rsplit("/", 1)[-1]
    ids: dict[str, UUID] = {}
    for section in sections:
        ids[section.key] = publish_section(section, prefix, run_name)
        if tables and section.header:
            create_table_artifact(
                table=[
                    dict(zip(section.header, map(str, row), strict=True)) for row in section.rows
                ],
                key=artifact_key(prefix, section.key, "table"),
                description=f"{section.title} ({run_name})",
            )
    return ids
