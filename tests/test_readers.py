"""Readers: input listing (local, file://, memory://), formats, domain rules, parts, text
decoding helpers — on the real Debian sample."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import fsspec
import pytest

from curate.readers import (
    DEFAULT_DOMAIN_RULES,
    DomainRule,
    InputSpec,
    SkippedEntry,
    guess_format,
    list_inputs,
    plan_parts,
)
from curate.readers.text import (
    ReadError,
    bounded_gunzip,
    decode_text,
    looks_binary,
    looks_rot13,
    rot13,
    split_fortunes,
)

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
ES_OFF = SAMPLE / "fortune/fortunes-es-off/usr/share/games/fortunes/off/es/off/camioneros.fortunes"
ES = SAMPLE / "fortune/fortunes-es/usr/share/games/fortunes/es/amistad.fortunes"
IT_OFF = SAMPLE / "fortune/fortunes-it-off/usr/share/games/fortunes/off/it/leggi-o"


def test_list_sample_formats_and_domains() -> None:
    files = list_inputs([InputSpec(path=str(SAMPLE))])
    on_disk = sorted(str(p) for p in SAMPLE.rglob("*") if p.is_file())
    assert [f.url for f in files] == on_disk  # every file, sorted, absolute
    by_format = Counter(f.format for f in files)
    assert by_format["html"] == sum(1 for p in on_disk if p.endswith(".html"))
    assert by_format["pdf"] == 3
    assert by_format["fortune"] == sum(1 for p in on_disk if "/fortune/" in p)
    assert by_format["code"] == 14
    domains = {f.url.rsplit("/", 1)[-1]: f.domain for f in files}
    assert domains["ch08.en.html"] == "web"
    assert domains["euro.pdf"] == "pdf"
    assert domains["difflib.py"] == "code" and domains["chunk.js"] == "code"
    assert domains["Wrap.pm"] == "code" and domains["naive.rs"] == "code"
    assert domains["devil.dict.dz"] == "prose"
    assert domains["amistad.fortunes"] == "prose" and domains["wisdom"] == "prose"
    assert domains["Passes.rst.txt"] == "prose"
    assert all(f.size == os.path.getsize(f.url) for f in files)


def test_listing_is_deterministic_and_deduplicated() -> None:
    specs = [
        InputSpec(path=str(SAMPLE / "pdf")),
        InputSpec(path=str(SAMPLE / "pdf/**/*.pdf"), domain="books"),  # same files again
        InputSpec(path=str(SAMPLE / "code"), glob="**/*.py"),
    ]
    a, b = list_inputs(specs), list_inputs(list(reversed(specs)))
    assert [f.url for f in a] == sorted(f.url for f in a)
    assert [f.url for f in a] == [f.url for f in b]
    assert len(a) == 3 + 5
    assert {f.domain for f in a if f.format == "pdf"} == {"pdf"}  # first spec wins
    assert {f.domain for f in b if f.format == "pdf"} == {"books"}
    assert all(f.url.endswith(".py") for f in a if f.format == "code")


def test_domain_override_and_custom_rules() -> None:
    spec = InputSpec(path=str(SAMPLE / "html/python3.11-doc"), domain="docs")
    assert {f.domain for f in list_inputs([spec])} == {"docs"}
    rules = [
        DomainRule(pattern="*/debian-handbook/*", domain="handbook"),
        DomainRule(pattern=r"re:debian-reference-(ja|zh-cn)", domain="cjk"),
    ]
    files = list_inputs([InputSpec(path=str(SAMPLE / "html"))], domain_rules=rules)
    got = Counter(f.domain for f in files)
    assert got["handbook"] == sum(1 for f in files if "/debian-handbook/" in f.url) > 0
    assert got["cjk"] == 2
    assert got["other"] == len(files) - got["handbook"] - got["cjk"]  # no rule: fallback
    assert DEFAULT_DOMAIN_RULES[0].matches("/x/index.HTML") is False  # case matters
    assert DomainRule(pattern="*.HTML", domain="web").matches("/x/index.HTML")


def test_guess_format() -> None:
    assert guess_format("s3://b/crawl/part-0.warc.gz") == "warc"
    assert guess_format("/x/a.jsonl.gz") == "jsonl"
    assert guess_format("/x/a.parquet") == "parquet"
    assert guess_format("/x/changelog.gz") == "text"
    assert guess_format("/usr/share/games/fortunes/linux") == "fortune"
    assert guess_format("/x/lib.rs") == "code"
    assert guess_format("/x/page.xhtml") == "html"


def test_file_and_memory_urls() -> None:
    local = list_inputs([InputSpec(path=str(SAMPLE / "code"))])
    via_file = list_inputs([InputSpec(path=f"file://{SAMPLE / 'code'}")])
    assert [f.url for f in via_file] == [f"file://{f.url}" for f in local]
    mem = fsspec.filesystem("memory")
    for f in local:
        mem.pipe(f"/readers-test/code/{f.url.rsplit('/', 1)[-1]}", Path(f.url).read_bytes())
    try:
        in_memory = list_inputs([InputSpec(path="memory://readers-test/code")])
        assert all(
            f.url.startswith("memory://") and "/readers-test/code/" in f.url for f in in_memory
        )
        assert sorted(f.size for f in in_memory) == sorted(f.size for f in local)
        assert [f.format for f in in_memory] == ["code"] * len(local)
    finally:
        mem.rm("/readers-test", recursive=True)


def test_missing_input_raises() -> None:
    with pytest.raises(FileNotFoundError):
        list_inputs([InputSpec(path=str(SAMPLE / "nope"))])


def test_plan_parts_bounds_and_determinism() -> None:
    files = list_inputs([InputSpec(path=str(SAMPLE))])
    parts = plan_parts(files, files_per_part=40, bytes_per_part=1 << 20)
    assert [f for p in parts for f in p] == files  # nothing lost, order kept
    assert all(len(p) <= 40 for p in parts)
    assert all(sum(f.size for f in p) <= 1 << 20 or len(p) == 1 for p in parts)
    assert parts == plan_parts(list(reversed(files)), 40, 1 << 20)
    assert len(plan_parts(files, 1000, 1 << 40)) == 1
    with pytest.raises(ValueError):
        plan_parts(files, 0, 1)


def test_rot13_detection_on_real_fortunes() -> None:
    off = ES_OFF.read_text("utf-8")
    assert looks_rot13(off)
    assert not looks_rot13(ES.read_text("utf-8"))
    assert not looks_rot13(IT_OFF.read_text("utf-8"))  # fortunes-it-off ships in clear
    clear = rot13(off)
    assert not looks_rot13(clear)
    assert rot13(clear) == off
    assert " que " in clear and " de " in clear


def test_split_fortunes() -> None:
    entries = split_fortunes(ES.read_text("utf-8"))
    raw = ES.read_text("utf-8")
    assert len(entries) == sum(1 for line in raw.splitlines() if line.strip() == "%") + (
        0 if raw.rstrip().endswith("%") else 1
    )
    assert all(e.strip() and "\n%\n" not in e for e in entries)
    assert split_fortunes("a\n%\n\n%\nb\r\n%\r\n") == ["a", "b"]


def test_decode_policy() -> None:
    text = ES.read_text("utf-8")
    assert decode_text(text.encode("utf-8")) == text
    assert decode_text(text.encode("utf-16")) == text
    assert decode_text(b"\xef\xbb\xbf" + text.encode()) == text
    assert decode_text(text.encode("latin-1")) == text  # legacy single-byte text is kept
    ja = (SAMPLE / "html/debian-reference-ja/usr/share/debian-reference/ch08.ja.html").read_text()
    assert decode_text(ja.encode("euc_jp", errors="replace")) == ja.encode(
        "euc_jp", errors="replace"
    ).decode("euc_jp")
    half = len(text) // 2
    with pytest.raises(ReadError) as e:
        decode_text(text[:half].encode() + text[half:].encode("latin-1"))
    assert e.value.reason == "mixed_encoding"


def test_binary_detection() -> None:
    assert looks_binary((SAMPLE / "meta/fortunes/changelog.gz").read_bytes()[10:])
    assert looks_binary(b"%PDF-1.5\n\x00\x01\x02")
    assert not looks_binary(ES.read_bytes())
    assert not looks_binary(ES.read_text().encode("utf-16"))  # NULs, but a BOM says UTF-16


def test_bounded_gunzip_stops_bombs() -> None:
    import gzip

    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(ReadError) as e:
        bounded_gunzip(bomb, 1 << 20)
    assert e.value.reason == "too_large"
    dz = (SAMPLE / "prose/dict-devil/usr/share/dictd/devil.dict.dz").read_bytes()
    assert bounded_gunzip(dz, 1 << 30) == gzip.decompress(dz)
    with pytest.raises(ReadError) as e:
        bounded_gunzip(dz[: len(dz) // 2], 1 << 30)
    assert e.value.reason == "corrupt_gzip"


def test_sources_and_ids_do_not_depend_on_the_checkout_folder(tmp_path, monkeypatch) -> None:
    """The same inputs in two copies of the sample, each given relative to its working
    directory: identical sources, ids, domains and parts (reading still uses real paths)."""
    from curate.readers import extract_part

    results = []
    for name in ("clone-a", "somewhere/else/clone-b"):
        root = tmp_path / name
        for sub in ("prose", "pdf", "fortune/fortunes-de"):
            shutil.copytree(SAMPLE / sub, root / "data/sample" / sub)
        monkeypatch.chdir(root)
        specs = [
            InputSpec(path="data/sample/prose", domain="prose"),
            InputSpec(path="./data/sample/pdf/"),
            InputSpec(path="data/sample/fortune/**/*"),
        ]
        files = list_inputs(specs)
        assert all(Path(f.url).is_absolute() and str(root) in f.url for f in files)
        assert all(f.source.startswith("data/sample/") for f in files)
        results.append((files, plan_parts(files, 4), extract_part(files).kept))
    (files_a, parts_a, docs_a), (files_b, parts_b, docs_b) = results
    assert [f.source for f in files_a] == [f.source for f in files_b]
    assert [f.domain for f in files_a] == [f.domain for f in files_b]
    assert [[f.source for f in p] for p in parts_a] == [[f.source for f in p] for p in parts_b]
    assert docs_a.num_rows > 100
    assert docs_a["id"].to_pylist() == docs_b["id"].to_pylist()
    assert docs_a["source"].to_pylist() == docs_b["source"].to_pylist()
    assert (
        "data/sample/pdf/texlive-fonts-recommended-doc/usr/share/doc/texlive-doc/latex/euro/euro.pdf"
        in set(docs_a["source"].to_pylist())
    )


def test_config_relative_inputs_keep_the_written_path(tmp_path, monkeypatch) -> None:
    """load_config reads a relative input from the config's folder when the working directory
    lacks it, but documents still name the path as written."""
    from curate.config import load_config

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    cfg = load_config(repo / "configs/default.yaml")
    prose = next(s for s in cfg.inputs if s.path == "data/sample/prose")
    assert prose.base_dir == str(repo) and Path(prose.location()).is_dir()
    (f,) = list_inputs([prose])
    assert f.source == "data/sample/prose/dict-devil/usr/share/dictd/devil.dict.dz"
    assert f.url == str(SAMPLE / "prose/dict-devil/usr/share/dictd/devil.dict.dz")
    assert f.format == "dictd"
    monkeypatch.chdir(repo)
    assert load_config(repo / "configs/default.yaml").hash() == cfg.hash()  # base_dir not hashed


def test_unreadable_folder_is_reported_not_skipped_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = SAMPLE / "code/libpython3.11-stdlib/usr/lib/python3.11/colorsys.py"
    (tmp_path / "ok").mkdir()
    shutil.copy(code, tmp_path / "ok" / "colorsys.py")
    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(code, locked / "hidden.py")
    locked.chmod(0)
    if os.geteuid() == 0:  # root lists any folder: fail the listing as it fails for a user
        real_scandir = os.scandir

        def scandir(path):  # noqa: ANN001, ANN202
            if os.fspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        skipped: list[SkippedEntry] = []
        files = list_inputs([InputSpec(path=str(tmp_path))], skipped=skipped)
    finally:
        locked.chmod(0o755)
    assert [Path(f.url).name for f in files] == ["colorsys.py"]
    assert skipped == [SkippedEntry(str(locked), "unreadable_dir", "Permission denied")]


def test_parts_are_sized_by_decompressed_bytes(tmp_path: Path) -> None:
    """Two small .jsonl.gz files that inflate to 1 MiB each do not share a 1.5 MiB part."""
    line = json.dumps({"text": ES.read_text("utf-8")}).encode() + b"\n"
    for name in ("a.jsonl.gz", "b.jsonl.gz"):
        (tmp_path / name).write_bytes(gzip.compress(line * ((1 << 20) // len(line) + 1)))
    files = list_inputs([InputSpec(path=str(tmp_path))])
    assert all(f.size < 100_000 for f in files)
    assert [len(p) for p in plan_parts(files, 10, 3 << 19)] == [1, 1]


# --- PDF text cleaning (before filters and PII) ------------------------------------------------

EURO_PDF = (
    SAMPLE / "pdf/texlive-fonts-recommended-doc/usr/share/doc/texlive-doc/latex/euro/euro.pdf"
)


def test_pdf_paragraphs_are_joined_and_page_numbers_dropped() -> None:
    import pypdfium2 as pdfium

    from curate.readers.pdf import extract_pdf

    data = EURO_PDF.read_bytes()
    doc = pdfium.PdfDocument(data)
    raw = [
        doc[i].get_textpage().get_text_range().replace("\r\n", "\n").replace("\ufffe", "")
        for i in range(len(doc))
    ]
    doc.close()
    assert all(page.rstrip().split("\n")[-1].strip().isdigit() for page in raw[1:5])  # footers
    text = extract_pdf(data).text
    lines = text.split("\n")
    assert not [x for x in lines if x.strip().isdigit()]  # page numbers are gone
    assert len(lines) < 0.8 * sum(page.count("\n") + 1 for page in raw)
    # a sentence that pdfium cut over two lines is one line again, words intact
    first = raw[0].split("\n")
    cut = next(i for i, x in enumerate(first) if len(x) > 60 and not x.endswith((".", ":")))
    assert f"{first[cut]} {first[cut + 1]}" in text
    assert "currency" in text and "calculations" in text and "\ufffe" not in text


def test_pdf_running_headers_dot_leaders_and_cut_words() -> None:
    from curate.readers.pdf import clean_pages

    body = (
        "The {} maintainer answers questions sent to the bug tracking sys-\n"
        "tem and reads the mailing list, which is archived at control@bugs.\n"
        "debian.org for everyone, {} included.\n"
        "Short last line about {}."
    )
    names = ["apt", "dpkg", "tar", "gzip", "bash"]
    pages = [f"Debian Guide {n} / 40\n{body.format(w, w, w)}" for n, w in enumerate(names)]
    pages[0] = "Contents\n1 Introduction . . . . . . . . . . . . 1\n2 Setup ........ 7"
    cleaned = clean_pages(pages)
    assert cleaned[0] == "Contents\n1 Introduction 1\n2 Setup 7"
    for page, name in zip(cleaned[1:], names[1:], strict=True):
        assert "Debian Guide" not in page  # a running header (digits compared as #)
        assert "bug tracking system and reads" in page  # de-hyphenated, joined
        assert "control@bugs.debian.org for everyone" in page  # an address cut at a line end
        assert page.endswith(f"{name} included.\nShort last line about {name}.")  # a short line


# a DocBook FAQ chapter whose source HTML is hard-wrapped (as debian-faq's French translation):
# inline markup (<code>, <span>) ends lines short of the margin, mid-sentence
WRAPPED_HTML = """<html><body><div class="chapter"><h1>Chapitre 10. Debian et le noyau</h1>
<div class="section"><h2>10.1. Puis-je installer et compiler un noyau sans spécificité
Debian ?</h2>
<p>Oui.</p>
<p>Debian ne comporte qu'une subtilité : les bibliothèques C de Debian sont
construites avec la version stable la plus récente des
<span class="emphasis">en-têtes</span> du noyau. Si vous devez compiler
un programme avec des en-têtes de noyau plus récents que ceux de la branche
stable, vous devrez alors soit mettre à niveau le paquet contenant les
en-têtes (<code>linux-libc-dev</code>), soit
employer les nouveaux en-têtes inclus dans l'arborescence des sources du
nouveau noyau installé. Cela veut dire que si les sources du noyau sont dans
<code>/usr/src/linux</code>, alors vous devriez ajouter
<code>-I/usr/src/linux/include/</code> à votre ligne de commande pour
la compilation.</p>
<p>Les utilisateurs souhaitant (ou devant) construire un noyau personnalisé
sont invités à utiliser le paquet Debian cible (target) inclus dans les
versions récentes du système de construction du noyau. Après avoir configuré
le noyau, lancez simplement la commande suivante :</p>
<pre>make deb-pkg</pre>
<p>Le nouveau paquet du noyau sera créé dans le répertoire parent de
l'arborescence des sources du noyau et vous pouvez l'installer en utilisant
<code>dpkg -i</code>.</p></div></div></body></html>"""


def test_hard_wrapped_html_lines_are_joined_into_paragraphs() -> None:
    import trafilatura

    from curate.filters.heuristics import HeuristicsConfig, measure
    from curate.readers.html import extract_html
    from curate.readers.pdf import is_hard_wrapped

    raw = trafilatura.extract(WRAPPED_HTML, output_format="txt", favor_recall=True) or ""
    assert is_hard_wrapped(raw.split("\n"))
    text = extract_html(WRAPPED_HTML)
    assert (
        "les bibliothèques C de Debian sont construites avec la version stable la plus récente "
        "des en-têtes du noyau. Si vous devez compiler un programme" in text
    )
    assert "\nmake deb-pkg\n" in text  # a command on its own line stays a line
    assert len(text.split("\n")) < len(raw.split("\n")) / 2
    # C4's line rule now sees the sentences (it kept two of the wrapped lines)
    cfg = HeuristicsConfig()
    assert (
        measure(text, "fr", cfg)[0]["c4_sentences"] > 2 * measure(raw, "fr", cfg)[0]["c4_sentences"]
    )


def test_html_with_one_paragraph_per_line_is_not_rejoined() -> None:
    """Real pages of data/sample: extracted text is one paragraph per line, left as it is."""
    import trafilatura

    from curate.readers.html import extract_html

    pages = sorted((SAMPLE / "html").rglob("*.html"))[::12]  # handbook, reference, python...
    assert len(pages) >= 5
    for page in pages:
        html = page.read_text("utf-8", "replace")
        raw = trafilatura.extract(html, output_format="txt", favor_recall=True, deduplicate=False)
        assert extract_html(html) == (raw or ""), page


def test_lines_broken_at_inline_elements_are_rejoined() -> None:
    """A paragraph of running text straight inside a <div> (no <p>, as the handbook's short
    sections are written): trafilatura puts each inline <code> and its tail on lines of their
    own; the reader joins them back. A <pre> listing keeps its lines."""
    import re

    import trafilatura

    from curate.readers.html import extract_html, join_inline_breaks

    page = SAMPLE / "html/debian-handbook/usr/share/doc/debian-handbook/html/en-US"
    html = (page / "sect.apt-frontends.html").read_text("utf-8")
    paragraphs = re.findall(r'<div class="para">(.*?)</div>', html, flags=re.S)
    para = next(p for p in paragraphs if p.count("<code") >= 3).strip()
    bare = (
        '<html><head><title>A.9</title></head><body><div class="section" id="s">'
        '<div class="titlepage"><div><div><h2 class="title">A.9. APT</h2></div></div></div>\n\t\t\t'
        f'{para} <div class="url">→ <a href="https://x.org">https://x.org</a></div>\n'
        "</div></body></html>"
    )
    raw = trafilatura.extract(bare, output_format="txt", favor_recall=True) or ""
    assert "\nlibapt-pkg\n shared library" in raw  # the extractor's breaks
    text = extract_html(bare)
    first = text.split("\n")[0]
    assert "resides in the libapt-pkg shared library. Using a shared library" in first
    assert "Historically, apt-get was only designed as a test frontend for libapt-pkg but" in first
    listing = "$ apt-cache policy\n Candidate: 1.0"  # <pre> lines stay lines
    assert join_inline_breaks(listing, {"$ apt-cache policy", "Candidate: 1.0"}) == listing
    # "systemd" + "-less": punctuation right after an element goes on with it; "- item" does not
    split = "a system without \nsystemd\n-less parts.\n- item"
    assert join_inline_breaks(split, set()) == "a system without systemd-less parts.\n- item"
