"""HTML → main text (boilerplate removed) with trafilatura or resiliparse, per :class:`HtmlOptions`.

``extract.html.extractor`` chooses the extractor (``extract: {html: resiliparse}`` is short for
``extract: {html: {extractor: resiliparse}}``):

- ``trafilatura`` (default): trafilatura's main-text extraction with its fallbacks; the
  ``favor_*``/``include_*``/``fast``/``max_tree_size`` options are its own.
- ``resiliparse``: resiliparse's ``extract_plain_text`` (a C++ DOM walk with main-content
  heuristics, ~15× faster per page, see bench/RESULTS.md); ``main_content``, ``alt_texts`` and
  ``list_bullets`` are its options, ``include_comments``/``include_links`` map onto its
  ``comments``/``links``; the trafilatura-only options are ignored.

Both run inside the extraction worker process (:mod:`curate.readers.worker`), which enforces the
per-document timeout and memory limit, with the same quarantine reasons and counters; both can
also be called in-process. Text whose lines were hard-wrapped in the HTML source (every line
≤ 100 characters, see :func:`curate.readers.pdf.is_hard_wrapped`) has its wrapped lines joined
with the PDF reader's line joining, so line-based rules (C4, FineWeb) see paragraphs.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from curate.readers.pdf import unwrap_text

HtmlExtractor = Literal["trafilatura", "resiliparse"]
_RESILIPARSE_ONLY = ("main_content", "alt_texts", "list_bullets")


class HtmlOptions(BaseModel):
    """Which extractor, and its options (see ``trafilatura.extract`` and resiliparse's
    ``extract_plain_text``)."""

    model_config = ConfigDict(extra="forbid")

    extractor: HtmlExtractor = "trafilatura"
    # trafilatura
    favor_recall: bool = True  # documentation pages: keep code blocks and short sections
    favor_precision: bool = False
    include_comments: bool = False  # both extractors
    include_tables: bool = True
    include_formatting: bool = False
    include_links: bool = False  # both extractors
    fast: bool = False  # True: skip the fallback extractors (faster, lower recall)
    max_tree_size: int | None = None  # trafilatura's node limit (None: its default)
    # resiliparse
    main_content: bool = True  # its main-content heuristics (False: every visible text)
    alt_texts: bool = False  # image alt texts (trafilatura keeps none in txt output)
    list_bullets: bool = False  # "•"/"1." before list items (trafilatura writes "- ")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        """``html: resiliparse`` → ``html: {extractor: resiliparse}``."""
        return {"extractor": value} if isinstance(value, str) else value


def extract_html(html: str, options: HtmlOptions | dict | None = None) -> str:
    """Main text of an HTML page ('' when the extractor finds none)."""
    opts = (
        options if isinstance(options, HtmlOptions) else HtmlOptions.model_validate(options or {})
    )
    if opts.extractor == "resiliparse":
        return _resiliparse(html, opts)
    import trafilatura

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    text = trafilatura.extract(
        html,
        output_format="txt",
        with_metadata=False,
        deduplicate=False,
        **trafilatura_options(opts),
    )
    return unwrap_text(text or "")


def trafilatura_options(opts: HtmlOptions) -> dict[str, Any]:
    """The options of ``opts`` that are ``trafilatura.extract``'s keyword arguments."""
    return opts.model_dump(exclude={"extractor", *_RESILIPARSE_ONLY})


def _resiliparse(html: str, opts: HtmlOptions) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    text = extract_plain_text(
        html,
        preserve_formatting=True,
        main_content=opts.main_content,
        list_bullets=opts.list_bullets,
        alt_texts=opts.alt_texts,
        links=opts.include_links,
        comments=opts.include_comments,
    )
    return unwrap_text(text.strip())
