"""PDF → text with pypdfium2: one document per file, pages joined by a blank line.

One document per file (not per page): a page is too short a unit for the quality and dedup
stages, and the file is what a licence and a provenance record point to. Pages whose text is
blank are counted (``pdf_empty_pages``); blank pages holding an image are counted as scanned
(``pdf_scanned_pages``: text would need OCR, which Sluice does not do). A PDF whose pages are
all blank is removed as ``empty_text`` by the extract stage.

The text is cleaned before any filter or PII rule sees it (:func:`clean_pages`): lines that
repeat at the top or bottom of most pages (running headers/footers, page numbers; digits
compared as ``#``) are dropped, dot leaders of tables of contents (``. . . . .``) become one
space, a word broken at a line end (pdfium's soft-hyphen mark, or ``-`` before a lower-case
letter) is joined, and the lines of a paragraph are joined into one line (a line that fills the
page's text width continues on the next one; CJK lines join without a space; an e-mail address
or URL cut at a line end joins without a space). Blank lines between pages stay.

Quarantine reasons: ``encrypted_pdf`` (a user password is needed), ``corrupt_pdf`` (pdfium
cannot load it; truncated files land here), ``not_pdf`` (no ``%PDF-`` header).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from curate.readers.text import ReadError
from curate.text import DOT_LEADER, UNSPACED_CHAR

PAGE_SEPARATOR = "\n\n"


@dataclass
class PdfText:
    text: str
    pages: int
    empty_pages: int
    scanned_pages: int
    page_errors: int


def _clean(text: str) -> str:
    """pdfium marks a hyphenation break with U+FFFE (the word goes on after the line end) and
    ends lines with CRLF."""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\ufffe\n", "").replace("\ufffe", "")


_DIGITS = re.compile(r"\d+|^[ivxlc]+\b|\b[ivxlc]+$")  # and roman page numbers at an end
_PAGE_NUMBER = re.compile(r"(?:page\s*)?[\divxlc]+(?:\s*(?:/|of)\s*\d+)?", re.IGNORECASE)
_PAGE_OF = re.compile(r"#\s*(?:/|of)\s*#")  # "7 / 57", "7 of 57": one page number
_EDGE_LINES = 2  # lines at the top and at the bottom of a page looked at for running lines
_TERMINAL = (".", "!", "?", ":", ";", "。", "！", "？", "؟", "।")
_BULLET = re.compile(r"^(?:[•◦▪‣●○■□–—*-]|\d+(?:\.\d+)*[.)]?\s|[a-z][.)]\s)")
_CUT_ADDRESS = re.compile(r"\S+@$|(?:\S+@\S*|\w+://\S*)[.\-/_]$")


def _shape(line: str) -> str:
    return _PAGE_OF.sub("#", _DIGITS.sub("#", " ".join(line.split()).lower()))


def running_lines(pages: list[list[str]], min_share: float = 0.5) -> set[str]:
    """Shapes of lines found among the first/last lines of at least ``min_share`` of the pages
    (3 pages at least): running headers and footers."""
    if len(pages) < 3:
        return set()
    seen: Counter[str] = Counter()
    for lines in pages:
        edge = [x for x in lines if x.strip()]
        seen.update({_shape(x) for x in edge[:_EDGE_LINES] + edge[-_EDGE_LINES:]})
    return {shape for shape, n in seen.items() if n >= max(3, min_share * len(pages))}


def _joins(prev: str, nxt: str, width: int, lowercase_continues: bool = False) -> str | None:
    """How the physical line ``prev`` and the next line ``nxt`` join inside a paragraph
    ('', ' ', '-' for "drop the hyphen") or None (a line break). ``lowercase_continues``: a
    line that stops short of the margin without terminal punctuation also joins a next line
    that starts in lower case (hard-wrapped HTML, where inline markup shortens lines)."""
    if not prev or not nxt:
        return None
    if prev.endswith("-") and len(prev) > 1 and prev[-2] in "/" and not nxt[0].isspace():
        return "-"  # a URL broken after a slash (TeX's url package adds the hyphen)
    if prev.endswith("-") and len(prev) > 1 and prev[-2].isalnum() and nxt[0].islower():
        return "-"  # a word broken at the line end: drop the hyphen
    if _CUT_ADDRESS.search(prev) and not _BULLET.match(nxt):
        return ""
    if _BULLET.match(nxt):
        return None  # a new item
    short = len(prev) < 0.75 * width
    if short and not (lowercase_continues and nxt[0].islower() and not prev.endswith(_TERMINAL)):
        return None  # a line that stops short of the margin ends its paragraph
    cjk = UNSPACED_CHAR.match(prev[-1]) or UNSPACED_CHAR.match(nxt[0])
    return "" if cjk else " "


def clean_page(lines: list[str], running: set[str]) -> str:
    """One page's text: running lines dropped, dot leaders squeezed, paragraphs joined."""
    kept = []
    for line in lines:
        if _shape(line) in running or (line.strip() and _PAGE_NUMBER.fullmatch(line.strip())):
            continue
        kept.append(DOT_LEADER.sub(" ", line).rstrip() if "." in line else line.rstrip())
    return join_wrapped_lines(kept)


def text_width(lines: list[str]) -> int:
    """The text width of wrapped lines: the 90th percentile of the non-blank lines' lengths."""
    lengths = sorted(len(x) for x in lines if x.strip())
    return lengths[int(0.9 * (len(lengths) - 1))] if lengths else 0


def join_wrapped_lines(lines: list[str], lowercase_continues: bool = False) -> str:
    """The lines of each paragraph joined into one line (see :func:`_joins`; a line that fills
    the text width continues on the next one)."""
    width = text_width(lines)
    out: list[str] = []
    last = ""  # the previous physical line
    for line in lines:
        if out and line.strip():
            glue = _joins(last, line.lstrip(), width, lowercase_continues)
            if glue is not None:
                head = out[-1][:-1] if glue == "-" else out[-1] + glue
                out[-1], last = head + line.lstrip(), line
                continue
        out.append(line)
        last = line
    return "\n".join(out).strip("\n")


HARD_WRAP_MAX_WIDTH = 100  # extracted HTML whose lines all fit in this many characters ...
HARD_WRAP_MIN_LINES = 10  # ... over at least this many lines was wrapped in its source


def is_hard_wrapped(lines: list[str]) -> bool:
    """Text whose every line is at most :data:`HARD_WRAP_MAX_WIDTH` characters (at least
    :data:`HARD_WRAP_MIN_LINES` non-blank lines, a third of them filling 75 % of the width):
    lines wrapped in the source, not one paragraph per line."""
    lengths = [len(x.rstrip()) for x in lines if x.strip()]
    if len(lengths) < HARD_WRAP_MIN_LINES or max(lengths) > HARD_WRAP_MAX_WIDTH:
        return False
    width = text_width(lines)
    return sum(n >= 0.75 * width for n in lengths) >= len(lengths) / 3


def unwrap_text(text: str) -> str:
    """``text`` with wrapped lines joined where it is clearly hard-wrapped (else unchanged)."""
    lines = text.split("\n")
    if not is_hard_wrapped(lines):
        return text
    return join_wrapped_lines([line.rstrip() for line in lines], lowercase_continues=True)


def clean_pages(pages: list[str]) -> list[str]:
    """Cleaned text of each page (see the module doc); empty pages stay empty."""
    split = [page.split("\n") for page in pages]
    running = running_lines(split)
    return [clean_page(lines, running) for lines in split]


def extract_pdf(data: bytes, max_pages: int | None = None) -> PdfText:
    """Text of every page (up to ``max_pages``); raises :class:`ReadError` for bad files."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    if b"%PDF-" not in data[:1024]:
        raise ReadError("not_pdf", "no %PDF- header in the first 1 KiB")
    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        msg = str(e)
        if "password" in msg.lower() or "security" in msg.lower():
            raise ReadError("encrypted_pdf", msg) from None
        raise ReadError("corrupt_pdf", msg) from None
    try:
        n = len(doc)
        texts: list[str] = []
        empty = scanned = errors = 0
        for i in range(n if max_pages is None else min(n, max_pages)):
            try:
                page = doc[i]
                textpage = page.get_textpage()
                text = _clean(textpage.get_text_range())
                textpage.close()
                if text.strip():
                    texts.append(text.strip("\n"))
                else:
                    empty += 1
                    if any(
                        True
                        for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2)
                    ):
                        scanned += 1
                page.close()
            except pdfium.PdfiumError:
                errors += 1
        cleaned = [t for t in clean_pages(texts) if t.strip()]
        return PdfText(PAGE_SEPARATOR.join(cleaned), n, empty, scanned, errors)
    finally:
        doc.close()
