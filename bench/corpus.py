"""Build a corpus of real documents from Debian's DFSG-free documentation packages.

Packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (no install, no
root needed for the unpack); a fetcher for the benchmarks, not part of the library
(``PYTHONPATH=. python -m bench.corpus --tier full --out /work/corpus/full``). Tiers:

- ``sample``: the few-MB selection committed under ``data/sample`` (the default run and the tests
  use it, so neither needs apt).
- ``small``: whole manuals and code trees of a handful of packages (tens of MB).
- ``full``: every package listed in ``PACKAGES`` (hundreds of MB); what the benchmarks read.

Layout of the output: ``<out>/<kind>/<package>/<relative path>`` with ``kind`` one of
``html, pdf, code, prose, rst, meta``; the package's ``copyright`` file is kept in
``<out>/LICENSES/<package>.copyright``.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


# package -> list of (kind, glob under the unpacked root, max files for the sample tier)
@dataclass(frozen=True)
class Pick:
    kind: str
    pattern: str
    sample: int  # files taken for the committed sample (0 = none); small/full take all


HANDBOOK_LOCALES = [
    "ar-MA",
    "ca-ES",
    "cs-CZ",
    "da-DK",
    "de-DE",
    "el-GR",
    "en-US",
    "es-ES",
    "fa-IR",
    "fr-FR",
    "hr-HR",
    "id-ID",
    "it-IT",
    "ja-JP",
    "ko-KR",
    "nb-NO",
    "nl-NL",
    "pl-PL",
    "pt-BR",
    "ro-RO",
    "ru-RU",
    "sv-SE",
    "tr-TR",
    "vi-VN",
    "zh-CN",
    "zh-TW",
]
HANDBOOK_SAMPLE_PAGES = ("sect.apt-frontends.html", "sect.backup.html")

PACKAGES: dict[str, list[Pick]] = {
    "debian-handbook": [
        Pick("html", f"usr/share/doc/debian-handbook/html/{loc}/{page}", 1)
        for loc in HANDBOOK_LOCALES
        for page in HANDBOOK_SAMPLE_PAGES
    ]
    + [Pick("html", "usr/share/doc/debian-handbook/html/*/*.html", 0)],
    **{
        f"debian-reference-{lang}": [
            Pick("html", f"usr/share/debian-reference/ch08.{lang}.html", 1),
            Pick("html", f"usr/share/debian-reference/*.{lang}.html", 0),
            Pick("pdf", f"usr/share/debian-reference/debian-reference.{lang}.pdf", 0),
            Pick("prose", f"usr/share/debian-reference/debian-reference.{lang}.txt*", 0),
        ]
        for lang in ("en", "de", "fr", "es", "it", "pt", "id", "ja", "zh-cn", "zh-tw")
    },
    "python3.11-doc": [
        Pick("html", "usr/share/doc/python3.11/html/tutorial/*.html", 8),
        Pick("html", "usr/share/doc/python3.11/html/**/*.html", 0),
        Pick("rst", "usr/share/doc/python3.11/html/_sources/**/*.rst.txt", 0),
    ],
    **{
        f"llvm-{v}-doc": [
            Pick("rst", f"usr/share/doc/llvm-{v}-doc/html/_sources/{name}.rst.txt", 1)
            for name in (
                "CommandGuide/lli",
                "CommandGuide/llc",
                "CommandGuide/opt",
                "CommandGuide/llvm-ar",
                "CommandGuide/llvm-nm",
                "CommandGuide/llvm-objdump",
                "CommandGuide/FileCheck",
                "CommandGuide/llvm-cov",
                "CommandGuide/llvm-profdata",
                "CommandGuide/tblgen",
                "CommandGuide/llvm-strings",
                "CommandGuide/llvm-size",
                "GettingStarted",
                "CodingStandards",
                "Lexicon",
                "FAQ",
                "Passes",
                "ProgrammersManual",
                "TestingGuide",
                "WritingAnLLVMPass",
            )
        ]
        + [Pick("rst", f"usr/share/doc/llvm-{v}-doc/html/_sources/**/*.rst.txt", 0)]
        for v in (13, 14, 15, 16)
    },
    "texlive-fonts-recommended-doc": [
        Pick("pdf", "usr/share/doc/texlive-doc/fonts/marvosym/marvodoc.pdf", 1),
        Pick("pdf", "usr/share/doc/texlive-doc/latex/euro/euro.pdf", 1),
        Pick("pdf", "usr/share/doc/texlive-doc/latex/wasysym/wasysym.pdf", 1),
        Pick("pdf", "usr/share/doc/texlive-doc/**/*.pdf", 0),
    ],
    "libpython3.11-stdlib": [
        Pick("code", f"usr/lib/python3.11/{m}.py", 1)
        for m in (
            "textwrap",
            "shlex",
            "bisect",
            "heapq",
            "fnmatch",
            "glob",
            "colorsys",
            "queue",
            "string",
            "calendar",
            "difflib",
            "json/decoder",
        )
    ]
    + [Pick("code", "usr/lib/python3.11/**/*.py", 0)],
    "perl-modules-5.36": [
        Pick("code", "usr/share/perl/5.36/Text/Wrap.pm", 1),
        Pick("code", "usr/share/perl/5.36/Text/Abbrev.pm", 1),
        Pick("code", "usr/share/perl/5.36/File/Basename.pm", 1),
        Pick("code", "usr/share/perl/5.36/**/*.pm", 0),
    ],
    "node-lodash": [
        Pick("code", "usr/share/nodejs/lodash/chunk.js", 1),
        Pick("code", "usr/share/nodejs/lodash/debounce.js", 1),
        Pick("code", "usr/share/nodejs/lodash/_baseFlatten.js", 1),
        Pick("code", "usr/share/nodejs/lodash/*.js", 0),
    ],
    "librust-memchr-dev": [
        Pick("code", "usr/share/cargo/registry/memchr-*/src/memchr/naive.rs", 1),
        Pick("code", "usr/share/cargo/registry/memchr-*/src/cow.rs", 1),
        Pick("code", "usr/share/cargo/registry/memchr-*/src/**/*.rs", 0),
    ],
    "librust-itoa-dev": [Pick("code", "usr/share/cargo/registry/itoa-*/src/*.rs", 1)],
    "dict-devil": [Pick("prose", "usr/share/dictd/devil.dict.dz", 1)],
    "dict-jargon": [Pick("prose", "usr/share/dictd/jargon.dict.dz", 0)],
    "fortunes": [
        Pick("fortune", f"usr/share/games/fortunes/{n}", 1)
        for n in ("computers", "literature", "science", "linux", "people", "wisdom")
    ]
    + [Pick("fortune", "usr/share/games/fortunes/*", 0)],
    "fortunes-it": [
        Pick("fortune", f"usr/share/games/fortunes/it/{n}", 1)
        for n in ("italia", "definizioni", "leggi")
    ],
    "fortunes-it-off": [
        Pick("fortune", f"usr/share/games/fortunes/off/it/{n}-o", 1)
        for n in ("definizioni", "italia", "leggi", "luttazzi")
    ],
    "fortunes-es": [
        Pick("fortune", f"usr/share/games/fortunes/es/{n}.fortunes", 1)
        for n in ("amistad", "ciencia", "filosofia", "informatica", "libertad")
    ],
    "fortunes-es-off": [Pick("fortune", "usr/share/games/fortunes/off/es/**/*.fortunes", 4)],
    "fortunes-de": [
        Pick("fortune", f"usr/share/games/fortunes/de/{n}", 1)
        for n in ("anekdoten", "computer", "sprichworte", "wusstensie")
    ],
}
# changelogs (real names and e-mail addresses: the PII tests) are kept for every package
META_PATTERNS = ("usr/share/doc/*/changelog.Debian.gz", "usr/share/doc/*/changelog.gz")

SMALL_PACKAGES = (
    "debian-handbook",
    "debian-reference-en",
    "debian-reference-de",
    "debian-reference-ja",
    "python3.11-doc",
    "llvm-15-doc",
    "llvm-16-doc",
    "texlive-fonts-recommended-doc",
    "libpython3.11-stdlib",
    "fortunes",
    "fortunes-it-off",
    "fortunes-es-off",
    "dict-jargon",
)


def _glob(root: Path, pattern: str) -> list[Path]:
    found = sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.endswith(".dat"))
    return [p for p in found if not fnmatch.fnmatch(p.name, "*.u8")]


def fetch_package(package: str, cache: Path) -> Path:
    """Download and unpack one Debian package into ``cache/<package>``; reused if present."""
    root = cache / package
    if (root / ".unpacked").exists():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["apt-get", "download", package], cwd=tmp, check=True, stdout=subprocess.DEVNULL
        )
        (deb,) = Path(tmp).glob("*.deb")
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    (root / ".unpacked").touch()
    return root


def build(tier: str, out: Path, cache: Path) -> dict[str, int]:
    """Copy the tier's files into ``out``; return files per kind."""
    packages = SMALL_PACKAGES if tier == "small" else tuple(PACKAGES)
    counts: dict[str, int] = {}
    for package in packages:
        root = fetch_package(package, cache)
        seen: set[Path] = set()
        for pick in PACKAGES[package]:
            if tier == "sample" and pick.sample == 0:
                continue
            files = _glob(root, pick.pattern)
            if tier == "sample":
                files = files[: pick.sample]
            for src in files:
                if src in seen:
                    continue
                seen.add(src)
                dst = out / pick.kind / package / src.relative_to(root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src.resolve(), dst)
                counts[pick.kind] = counts.get(pick.kind, 0) + 1
        for pattern in META_PATTERNS:
            for src in _glob(root, pattern)[:1]:
                dst = out / "meta" / package / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src.resolve(), dst)
                counts["meta"] = counts.get("meta", 0) + 1
        for src in _glob(root, "usr/share/doc/*/copyright")[:1]:
            dst = out / "LICENSES" / f"{package}.copyright"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.resolve(), dst)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=("sample", "small", "full"), default="small")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/sluice/debs")
    args = parser.parse_args(argv)
    counts = build(args.tier, args.out, args.cache)
    print(f"{args.tier}: {sum(counts.values())} files in {args.out}: {counts}")


if __name__ == "__main__":
    main()
