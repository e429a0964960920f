"""PDF → text with pypdfium2: one document per file, pages joined by a blank line.

One document per file (not per page): a page is too short a unit for the quality and dedup
stages, and the file is what a licence and a provenance record point to. Pages whose text is
blank are counted (``pdf_empty_pages``); blank pages holding an image are counted as scanned
(``pdf_scanned_pages``: text would need OCR, which Sluice does not do). A PDF whose pages are
all blank is removed as ``empty_text`` by the extract stage.

Quarantine reasons: ``encrypted_pdf`` (a user password is needed), ``corrupt_pdf`` (pdfium
cannot load it; truncated files land here), ``not_pdf`` (no ``%PDF-`` header).
"""

from __future__ import annotations

from dataclasses import dataclass

from curate.readers.text import ReadError

PAGE_SEPARATOR = "\n\n"


@dataclass
class PdfText:
    text: str
    pages: int
    empty_pages: int
    scanned_pages: int
    page_errors: int


def _clean(text: str) -> str:
    """pdfium marks a hyphenation break with U+FFFE and ends lines with CRLF."""
    return text.replace("\ufffe", "").replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")


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
        return PdfText(PAGE_SEPARATOR.join(texts), n, empty, scanned, errors)
    finally:
        doc.close()
