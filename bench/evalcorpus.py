"""An evaluation corpus of clean documentation the filters were never tuned on (issue 15).

Debian documentation packages (fetched with ``apt-get download`` + ``dpkg -x``, as
``bench/corpus.py``) in 14 languages, HTML + PDF + plain text, none of it in ``data/sample`` and
none used by the tests or by the shipped quality model's training (``debian-reference-*``):

- ``debian-faq`` (en) and ``debian-faq-{de,fr,it,ja,ru,zh-cn}``: HTML chapters, PDF/txt where shipped;
- ``maint-guide`` (en) and ``maint-guide-{ca,es,ja,ru,vi,zh-cn}``: HTML chapters, PDF, txt;
- ``developers-reference-{ja,ru}``: HTML chapters, PDF, txt;
- ``debian-handbook`` in ``ar-MA``, ``fa-IR`` (right-to-left scripts) and ``ca-ES``: every chapter
  and section page except the two per locale that ``data/sample`` holds and the alphabetical
  index (``ix01.html``: a list of links, not prose);
- PDFs under 50 kB are left out: the packages ship one-page placeholders ("The PDF version ...
  is currently not available for the language you've selected").

Layout: ``<out>/<kind>/<lang>/<package>/<file>`` with ``kind`` one of ``html, pdf, txt``
(``.gz`` files are decompressed). **Label rule:** a document's language is the path component
after the kind (:func:`label_of`), taken from the package name (``debian-faq-ja`` → ``ja``,
``zh-cn`` → ``zh``, no suffix → ``en``) or the handbook's locale folder (``ar-MA`` → ``ar``).

    PYTHONPATH=. python -m bench.evalcorpus --out ~/.cache/sluice/evalcorpus
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

from bench.corpus import HANDBOOK_SAMPLE_PAGES, fetch_package

KINDS = ("html", "pdf", "txt")
FAQ_LANGS = ("en", "de", "fr", "it", "ja", "ru", "zh-cn")
MAINT_GUIDE_LANGS = ("en", "ca", "es", "ja", "ru", "vi", "zh-cn")
DEVREF_LANGS = ("ja", "ru")
HANDBOOK_LOCALES = ("ar-MA", "fa-IR", "ca-ES")
NOT_PROSE = {"ix01.html", "search.html", "genindex.html", "developers-reference.html"}
MIN_PDF_BYTES = 50_000  # smaller ones are placeholders


def _package(base: str, lang: str) -> str:
    return base if lang == "en" else f"{base}-{lang}"


def label(code: str) -> str:
    """ISO 639-1 code of a package suffix or locale (``zh-cn`` → ``zh``, ``ar-MA`` → ``ar``)."""
    return code.split("-")[0].lower()


def label_of(path: str | Path) -> str | None:
    """The language of a document of this corpus, from its path (``.../<kind>/<lang>/...``)."""
    parts = Path(path).parts
    for i, part in enumerate(parts[:-1]):
        if part in KINDS and i + 2 < len(parts):
            return parts[i + 1]
    return None


def picks() -> list[tuple[str, str, str, str]]:
    """(package, language, kind, glob under the unpacked package) for every file taken."""
    out: list[tuple[str, str, str, str]] = []
    for lang in FAQ_LANGS:
        pkg, suffix = _package("debian-faq", lang), "en" if lang == "en" else lang
        folder = "usr/share/doc/debian/FAQ" + ("" if lang == "en" else f"/{lang}")
        out += [
            (pkg, lang, "html", f"{folder}/*.{suffix}.html"),
            (pkg, lang, "pdf", f"usr/share/doc/debian/FAQ/debian-faq.{suffix}.pdf*"),
            (pkg, lang, "txt", f"usr/share/doc/debian/FAQ/debian-faq.{suffix}.txt*"),
        ]
    for lang in MAINT_GUIDE_LANGS:
        pkg = _package("maint-guide", lang)
        out += [
            (pkg, lang, "html", f"usr/share/doc/{pkg}/html/*.html"),
            (pkg, lang, "pdf", f"usr/share/doc/{pkg}/*.pdf*"),
            (pkg, lang, "txt", f"usr/share/doc/{pkg}/*.txt*"),
        ]
    for lang in DEVREF_LANGS:
        pkg = _package("developers-reference", lang)
        folder = f"usr/share/developers-reference/{lang}"
        out += [
            (pkg, lang, "html", f"{folder}/*.html"),
            (pkg, lang, "pdf", f"{folder}/*.pdf"),
            (pkg, lang, "txt", f"{folder}/*.txt*"),
        ]
    for loc in HANDBOOK_LOCALES:
        out.append(
            ("debian-handbook", loc, "html", f"usr/share/doc/debian-handbook/html/{loc}/*.html")
        )
    return out


def build(out: Path, cache: Path) -> dict[str, dict[str, int]]:
    """Fetch, unpack and copy every pick into ``out``; files per language and kind."""
    counts: dict[str, dict[str, int]] = {}
    for package, lang, kind, pattern in picks():
        root = fetch_package(package, cache)
        for src in sorted(p for p in root.glob(pattern) if p.is_file()):
            if (
                src.name in NOT_PROSE
                or (package == "debian-handbook" and src.name in HANDBOOK_SAMPLE_PAGES)
                or (kind == "pdf" and src.stat().st_size < MIN_PDF_BYTES)
            ):
                continue
            name = src.name.removesuffix(".gz")
            dst = out / kind / label(lang) / package / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.name.endswith(".gz"):
                with gzip.open(src) as f_in, open(dst, "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out)
            else:
                shutil.copyfile(src.resolve(), dst)
            per_lang = counts.setdefault(label(lang), {})
            per_lang[kind] = per_lang.get(kind, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache/sluice/evalcorpus")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/sluice/debs")
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    counts = build(args.out, args.cache)
    total = sum(sum(k.values()) for k in counts.values())
    print(f"{total} files in {args.out}")
    for lang, kinds in sorted(counts.items()):
        print(f"  {lang}: {kinds}")


if __name__ == "__main__":
    main()
