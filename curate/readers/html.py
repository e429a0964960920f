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

A page that is one section of a multi-page document says so in its ``<head>``: it links the
previous page (``<link rel="prev">``) and the document's own start or contents (``rel`` ``start``,
``home``, ``first``, ``contents``, ``toc``, ``index`` or ``up``), as DocBook, Sphinx and Texinfo
write them (a paginated listing links only prev/next). :func:`section_of` finds that link; the
extractor records it in the document's ``meta`` (``{"section_of": href}``), and the length minima
of the heuristics stage (Gopher's word count, C4's sentence count) do not judge such a page: its
length is not its document's.

Code and command listings (``<pre>`` blocks: shell sessions, configuration files, program
output) are not prose: :func:`code_lines` finds the lines of the extracted text that come from
them, the extractor records them in ``meta`` (``{"code_lines": [[start, end], ...]}``, line
numbers of the text, end exclusive), and the heuristics stage measures its prose rules on the
other lines. A page that is almost all ``<pre>`` (a text file or a mail shown as HTML) is a
preformatted document, not prose with listings: no ranges.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from curate.readers.pdf import unwrap_text

_LINK_TAG = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r"""\b(rel|href)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_HEAD_END = re.compile(r"</head\s*>|<body\b", re.IGNORECASE)
_PRE = re.compile(r"<pre\b[^>]*>(.*?)</pre\s*>", re.IGNORECASE | re.DOTALL)
_HAS_PRE = re.compile(r"<pre", re.IGNORECASE)  # a cheap test before _PRE's
_TAG = re.compile(r"<[^>]*>")
# rel values naming the whole document (its start or its contents), most specific first
DOCUMENT_RELS = ("start", "first", "home", "contents", "toc", "index", "up")
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
    return _extract_text(html, _options(options), listing_lines(html))


def extract_page(
    html: str, options: HtmlOptions | dict | None = None
) -> tuple[str, str | None, list[list[int]]]:
    """What the extract stage reads of a page, in one pass over its ``<pre>`` blocks: the main
    text (:func:`extract_html`), the document it is a later section of (:func:`section_of`) and
    the text's listing line ranges (:func:`code_lines`)."""
    pre = _pre_lines(html) if _HAS_PRE.search(html) else []
    text = _extract_text(html, _options(options), set(pre))
    return text, section_of(html), code_lines(html, text, pre)


def _options(options: HtmlOptions | dict | None) -> HtmlOptions:
    if isinstance(options, HtmlOptions):
        return options
    return HtmlOptions.model_validate(options or {})


def _extract_text(html: str, opts: HtmlOptions, listing: set[str]) -> str:
    """:func:`extract_html` given the page's listing lines (:func:`listing_lines`)."""
    if opts.extractor == "resiliparse":
        return _resiliparse(html, opts, listing)
    import trafilatura

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    text = trafilatura.extract(
        html,
        output_format="txt",
        with_metadata=False,
        deduplicate=False,
        **trafilatura_options(opts),
    )
    return join_inline_breaks(unwrap_text(text or ""), listing)


def trafilatura_options(opts: HtmlOptions) -> dict[str, Any]:
    """The options of ``opts`` that are ``trafilatura.extract``'s keyword arguments."""
    return opts.model_dump(exclude={"extractor", *_RESILIPARSE_ONLY})


def _resiliparse(html: str, opts: HtmlOptions, listing: set[str]) -> str:
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
    return join_inline_breaks(unwrap_text(text.strip()), listing)


def section_of(html: str) -> str | None:
    """The href of the document this page is a later section of (see module doc), else None:
    the page's ``<head>`` links a previous page and the document's start or contents."""
    end = _HEAD_END.search(html)
    head = html[: end.start()] if end else html[:65536]
    links: dict[str, str] = {}
    for tag in _LINK_TAG.findall(head):
        attrs = {m[0].lower(): m[1] or m[2] or m[3] for m in _ATTR.findall(tag)}
        href = attrs.get("href")
        for rel in attrs.get("rel", "").lower().split():
            if href and rel not in links:
                links[rel] = href
    if "prev" not in links and "previous" not in links:
        return None
    return next((links[rel] for rel in DOCUMENT_RELS if rel in links), None)


def _pre_lines(html: str) -> list[str]:
    """The stripped non-blank lines of the page's ``<pre>`` blocks, in order."""
    return [
        line.strip()
        for block in _PRE.findall(html)
        for line in html_lib.unescape(_TAG.sub("", block)).split("\n")
        if line.strip()
    ]


def listing_lines(html: str) -> set[str]:
    """The stripped non-blank lines of the page's ``<pre>`` blocks."""
    return set(_pre_lines(html))


_INLINE_TAIL = re.compile(r" \S")  # a line that starts with one space, then a word
_OPEN_END = re.compile(r"\S $")  # a line that ends in one space after a word
_WORD_CONTINUES = re.compile(r"[-,.;:!?)\]'’”](?:\S|$)")  # "systemd" + "-less" (not "- item")
# a page whose <pre> blocks hold this share of its text is a preformatted document (a text
# file, a mail archive's message, a man page), not prose with listings: its text is its prose
# (Debian documentation pages: at most 61 % in listings)
PREFORMATTED_PAGE = 0.9
MAX_INLINE_ELEMENT = 60  # characters: the text of one inline element (a command, a name)


def join_inline_breaks(text: str, listing: set[str]) -> str:
    """``text`` with the line breaks an extractor put around inline elements (``<code>``,
    ``<span>`` in a ``<div>`` of running text, no ``<p>``) removed: a line that starts with one
    space and a word continues the line before it (the space is the source's, between the
    element and its tail); a short line between a line ending in one space and such a tail is
    the element itself, and punctuation right after it (``systemd`` + ``-less``) goes on with
    it. A line wrapped in the HTML source (no space at the break) is left to
    :func:`curate.readers.pdf.unwrap_text`; lines of ``<pre>`` listings are left alone."""
    if "\n " not in text and " \n" not in text:
        return text
    lines = text.split("\n")
    out: list[str] = []
    glued = False  # the last output line ends with an inline element joined to it

    def follows(line: str) -> bool:
        return (
            bool(out)
            and bool(out[-1].strip())
            and out[-1].strip() not in listing
            and line.strip() not in listing
        )

    for i, line in enumerate(lines):
        after = lines[i + 1] if i + 1 < len(lines) else ""
        tail = _INLINE_TAIL.match(line) is not None or (
            glued and _WORD_CONTINUES.match(line) is not None
        )
        element = (
            not tail
            and 0 < len(line) <= MAX_INLINE_ELEMENT
            and not line[0].isspace()
            and bool(out)
            and _OPEN_END.search(out[-1]) is not None
            and (_INLINE_TAIL.match(after) is not None or _WORD_CONTINUES.match(after) is not None)
        )
        if (tail or element) and follows(line):
            out[-1] = out[-1].rstrip(" ") + line if _INLINE_TAIL.match(line) else out[-1] + line
            glued = element
        else:
            out.append(line)
            glued = False
    return "\n".join(out)


def code_lines(html: str, text: str, pre: list[str] | None = None) -> list[list[int]]:
    """Ranges ``[start, end)`` of the lines of ``text`` (the page's extracted text, split at
    ``\n``) that come from the page's ``<pre>`` blocks: a non-blank line whose stripped text is
    a line of such a block; none when they are the page (:data:`PREFORMATTED_PAGE`). ``pre``:
    the page's :func:`_pre_lines` when already found."""
    if pre is None:
        pre = _pre_lines(html) if _HAS_PRE.search(html) else []
    lines = text.split("\n")
    # a text file, a mail, a man page in <pre> (its lines may have been unwrapped since)
    if not pre:
        return []
    stripped = list(map(str.strip, lines))
    if sum(map(len, pre)) >= PREFORMATTED_PAGE * sum(map(len, stripped)):
        return []
    listing = set(pre)
    ranges: list[list[int]] = []
    for i, line in enumerate(stripped):
        if line and line in listing:
            if ranges and ranges[-1][1] == i:
                ranges[-1][1] = i + 1
            else:
                ranges.append([i, i + 1])
    return ranges
