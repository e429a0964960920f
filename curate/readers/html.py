"""HTML → main text with trafilatura (boilerplate removed), options from :class:`HtmlOptions`.

This module runs inside the extraction worker process (:mod:`curate.readers.worker`), which
enforces the per-document timeout and memory limit; it can also be called in-process.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict


class HtmlOptions(BaseModel):
    """trafilatura options (see ``trafilatura.extract``)."""

    model_config = ConfigDict(extra="forbid")

    favor_recall: bool = True  # documentation pages: keep code blocks and short sections
    favor_precision: bool = False
    include_comments: bool = False
    include_tables: bool = True
    include_formatting: bool = False
    include_links: bool = False
    fast: bool = False  # True: skip the fallback extractors (faster, lower recall)
    max_tree_size: int | None = None  # trafilatura's node limit (None: its default)


def extract_html(html: str, options: HtmlOptions | dict | None = None) -> str:
    """Main text of an HTML page ('' when trafilatura finds none)."""
    import trafilatura

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    opts = options if isinstance(options, HtmlOptions) else HtmlOptions(**(options or {}))
    text = trafilatura.extract(
        html,
        output_format="txt",
        with_metadata=False,
        deduplicate=False,
        **opts.model_dump(),
    )
    return text or ""
