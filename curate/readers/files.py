"""Input listing: configured inputs (local paths, globs, fsspec URLs) → sorted raw files.

An :class:`InputSpec` names a directory, a file, a glob or an fsspec URL (``file://``,
``memory://``, ``s3://`` ...). :func:`list_inputs` expands every spec into :class:`InputFile`
records, each with its format (from the spec, or guessed from the path in ``auto`` mode) and its
domain (the spec's ``domain`` if set, else the first matching :class:`DomainRule`). The listing is
sorted by source and deduplicated, so the same inputs always give the same parts.

Two names per file: ``url`` is where it is read from (an absolute local path or the fsspec URL);
``source`` names it in documents and ids: the spec's ``path`` as written in the config
(normalized) joined with the file's path below the spec's root, e.g.
``data/sample/html/debian-handbook/.../ch01.en.html``. So two clones of a repository in different
folders give the same ``source``, ids, domains, parts and mixture. URLs stay URLs. A local file
name that is not valid UTF-8 keeps its bytes in ``url`` (read as is) and shows them as ``\\xNN``
escapes in ``source``.

Local folders are walked by :func:`walk_local`, which follows symbolic links to files and folders
(a link back to a folder above it is a loop: not followed; a file reached both directly and
through a link is listed once, by its direct path). Nothing is dropped silently: every entry not
listed is a :class:`SkippedEntry` with a reason (``SKIP_REASONS``), returned by
logged by :func:`list_inputs` and appended to its ``skipped`` list. A folder holding a Sluice run directory's
marker files (``RUN_DIR_MARKERS``) is never read: a run's own outputs are not documents.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import fsspec
from fsspec.utils import glob_translate
from pydantic import BaseModel, ConfigDict, Field

from curate.readers.text import gzip_declared_size
from curate.storage import is_local_fs

Format = Literal[
    "auto", "html", "pdf", "code", "text", "fortune", "dictd", "warc", "jsonl", "parquet"
]
CONCRETE_FORMATS = (
    "html", "pdf", "code", "text", "fortune", "dictd", "warc", "jsonl", "parquet"
)  # fmt: skip

CODE_EXTENSIONS = (
    "py", "pyi", "pm", "pl", "js", "mjs", "cjs", "ts", "rs", "c", "h", "cc", "cpp", "cxx", "hpp",
    "go", "java", "rb", "sh", "bash", "lua", "php", "scala", "kt", "swift", "el", "hs", "ml",
    "sql", "r", "tcl", "cmake",
)  # fmt: skip


class InputSpec(BaseModel):
    """One configured input.

    ``rot13``: ``True`` decodes every fortune entry with ROT13 (Debian ships fortunes-off and
    fortunes-es-off ROT13-encoded), ``False`` never does, ``None`` (auto, the default) decodes a
    fortune file when its letters look ROT13-encoded (see :func:`curate.readers.text.looks_rot13`).
    """

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="directory, file, glob or fsspec URL")
    format: Format = "auto"
    domain: str | None = Field(None, description="overrides the domain rules when set")
    glob: str | None = Field(None, description="file pattern under a directory, e.g. '**/*.html'")
    text_field: str = Field("text", description="column/key holding the text (jsonl, parquet)")
    rot13: bool | None = None
    base_dir: str | None = Field(
        None,
        description="folder a relative local path is read from (None: the working directory); "
        "set by curate.config.load_config, never part of sources or ids",
    )

    def location(self) -> str:
        """Where the spec's files are read from: the URL, or the local path under ``base_dir``."""
        if self.base_dir and "://" not in self.path and not os.path.isabs(self.path):
            return os.path.join(self.base_dir, self.path)
        return self.path


class DomainRule(BaseModel):
    """``pattern`` matched against the whole path/URL: an fnmatch glob, or a regex (searched)
    when it starts with ``re:``. The first matching rule gives the domain."""

    model_config = ConfigDict(extra="forbid")

    pattern: str
    domain: str

    def matches(self, url: str) -> bool:
        if self.pattern.startswith("re:"):
            return re.search(self.pattern[3:], url) is not None
        return fnmatch.fnmatchcase(url, self.pattern)


FALLBACK_DOMAIN = "other"

DEFAULT_DOMAIN_RULES: list[DomainRule] = [
    DomainRule(pattern=r"re:\.(x?html?)$", domain="web"),
    DomainRule(pattern=r"re:\.warc(\.gz)?$", domain="web"),
    DomainRule(pattern=r"re:\.pdf$", domain="pdf"),
    DomainRule(pattern=rf"re:\.({'|'.join(CODE_EXTENSIONS)})$", domain="code"),
    DomainRule(pattern=r"re:/games/fortunes/", domain="prose"),
    DomainRule(pattern=r"re:\.fortunes$", domain="prose"),
    DomainRule(pattern=r"re:\.dict(\.dz)?$", domain="prose"),
    DomainRule(pattern=r"re:\.(rst|md|txt)(\.gz)?$", domain="prose"),
]


class InputFile(BaseModel):
    """One raw input file, ready to read (carries the spec's ``text_field`` and ``rot13``)."""

    model_config = ConfigDict(frozen=True)

    url: str  # where it is read from: absolute local path or fsspec URL
    format: str  # one of CONCRETE_FORMATS
    domain: str
    size: int
    text_field: str = "text"
    rot13: bool | None = None
    source: str = ""  # its name in documents and ids (module doc); "" = the url

    @property
    def name(self) -> str:
        """The ``source`` of its documents (``url`` when no source was given)."""
        return self.source or self.url


def guess_format(url: str) -> str:
    """Format of a file from its path (``auto`` mode)."""
    name = url.rsplit("/", 1)[-1].lower()
    for suffix in (".gz", ".dz", ".bz2", ".xz", ".zst"):
        if name.endswith(suffix) and not name.endswith((".warc.gz", ".tar.gz")):
            name = name[: -len(suffix)]
            break
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext in ("html", "htm", "xhtml"):
        return "html"
    if ext == "pdf":
        return "pdf"
    if name.endswith((".warc", ".warc.gz", ".arc")):
        return "warc"
    if ext in ("jsonl", "ndjson"):
        return "jsonl"
    if ext == "parquet":
        return "parquet"
    if ext in CODE_EXTENSIONS:
        return "code"
    if ext == "fortunes" or "/games/fortunes/" in url:
        return "fortune"
    if ext == "dict" or "/dictd/" in url and ext == "":
        return "dictd"
    return "text"


def domain_of(url: str, rules: list[DomainRule]) -> str:
    for rule in rules:
        if rule.matches(url):
            return rule.domain
    return FALLBACK_DOMAIN


# A folder holding both files is a Sluice run directory (written by curate.runner.plan_run).
RUN_DIR_MARKERS = ("config.json", "parts.json")
SKIP_REASONS = {
    "unreadable_dir": "a folder that cannot be listed (permissions, I/O error)",
    "unreadable_entry": "an entry whose type cannot be read",
    "broken_link": "a symbolic link whose target does not exist",
    "symlink_loop": "a link to a folder above it (a loop: not followed)",
    "duplicate_link": "a link to a file or folder already listed by another path",
    "not_a_file": "a socket, FIFO or device",
    "sluice_run_dir": "a Sluice run directory (its outputs are never inputs)",
}
_log = logging.getLogger("sluice.readers")


@dataclass(frozen=True)
class SkippedEntry:
    """An entry below an input folder that is not listed, and why (a ``SKIP_REASONS`` key)."""

    path: str
    reason: str
    detail: str = ""


def is_run_dir(path: str) -> bool:
    """True for a local folder holding a Sluice run directory's markers."""
    return all(os.path.isfile(os.path.join(path, m)) for m in RUN_DIR_MARKERS)


def readable_name(path: str) -> str:
    """``path`` as valid UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogate
    escapes) become ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def walk_local(
    root: str, skipped: list[SkippedEntry], max_depth: int | None = None
) -> Iterator[tuple[str, int]]:
    """(path, size) of every regular file below the local folder ``root`` (at most
    ``max_depth`` folders down; None: all), following links (module doc); appends every entry
    it does not yield to ``skipped``. Deterministic order."""
    # (path, folder ids above it, reached through a link, depth); a stack: no recursion limit
    stack: list[tuple[str, frozenset[tuple[int, int]], bool, int]] = []
    st = os.stat(root)
    stack.append((root, frozenset({(st.st_dev, st.st_ino)}), False, 0))
    linked_dirs: set[tuple[int, int]] = set()
    found: dict[tuple[int, int], list[tuple[bool, str, int]]] = {}
    while stack:
        folder, above, via_link, depth = stack.pop()
        if is_run_dir(folder):
            skipped.append(SkippedEntry(folder, "sluice_run_dir"))
            continue
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped.append(SkippedEntry(folder, "unreadable_dir", e.strerror or str(e)))
            continue
        subdirs = []
        for entry in entries:
            link = entry.is_symlink()
            try:
                est = os.stat(entry.path)  # follows links
            except OSError as e:
                reason = "broken_link" if link else "unreadable_entry"
                skipped.append(SkippedEntry(entry.path, reason, e.strerror or str(e)))
                continue
            key = (est.st_dev, est.st_ino)
            if stat.S_ISDIR(est.st_mode):
                if max_depth is not None and depth >= max_depth:
                    continue  # below what the pattern can match: not an input
                if key in above:
                    skipped.append(SkippedEntry(entry.path, "symlink_loop"))
                elif link and key in linked_dirs:
                    skipped.append(SkippedEntry(entry.path, "duplicate_link"))
                else:
                    if link:
                        linked_dirs.add(key)
                    subdirs.append((entry.path, above | {key}, via_link or link, depth + 1))
            elif stat.S_ISREG(est.st_mode):
                found.setdefault(key, []).append((via_link or link, entry.path, est.st_size))
            else:
                skipped.append(SkippedEntry(entry.path, "not_a_file"))
        stack += reversed(subdirs)
    out = []
    for paths in found.values():
        direct = [p for p in paths if not p[0]]
        if direct:  # hard links are distinct names: all kept; links to them are duplicates
            out += [(p, size) for _, p, size in direct]
            dupes = [p for linked, p, _ in paths if linked]
        else:
            first, *rest = sorted(paths, key=lambda p: p[1])
            out.append((first[1], first[2]))
            dupes = [p for _, p, _ in rest]
        skipped += [SkippedEntry(p, "duplicate_link") for p in dupes]
    return iter(sorted(out))


def _glob_root(path: str) -> str:
    """The folder part of a glob before its first wildcard (``a/b/**/*.pdf`` → ``a/b``)."""
    head = re.split(r"[*?\[]", path, maxsplit=1)[0]
    return head.rstrip("/") if head.endswith("/") else posixpath.dirname(head)


def _expand(spec: InputSpec, skipped: list[SkippedEntry]) -> list[tuple[str, str, int]]:
    """(url, source, size) of every file a spec names, with the URL protocol kept (see the
    module doc for ``source``); entries below it that are not listed go to ``skipped``."""
    location = spec.location()
    fs, path = fsspec.core.url_to_fs(location)
    protocol = location.split("://", 1)[0] if "://" in location else None
    written = spec.path if protocol else posixpath.normpath(spec.path.replace(os.sep, "/"))

    def url_of(p: str) -> str:
        return fs.unstrip_protocol(p) if protocol else p

    is_glob = any(c in path for c in "*?[")
    if is_glob:  # the written and the resolved glob share the part after the root
        root, written_root = _glob_root(path), _glob_root(written)
    else:
        root, written_root = path.rstrip("/"), written.rstrip("/")

    def source_of(p: str) -> str:
        if protocol:
            return url_of(p)
        if p == root:  # the spec names the file itself
            return readable_name(written_root)
        rel = posixpath.relpath(p, root) if root else p
        return readable_name(
            posixpath.join(written_root, rel) if written_root not in ("", ".") else rel
        )

    if is_local_fs(fs) and (is_glob or fs.isdir(path)):
        pattern = path if is_glob else f"{root}/{spec.glob}" if spec.glob else None
        walk_root = root if is_glob else path.rstrip("/")
        if is_glob and not os.path.isdir(walk_root):
            return []
        match = re.compile(glob_translate(pattern)).match if pattern else None
        below = pattern[len(walk_root) :].strip("/") if pattern else "**"
        depth = None if "**" in below else below.count("/")  # folders the pattern spans
        return [
            (url_of(p), source_of(p), size)
            for p, size in walk_local(walk_root, skipped, depth)
            if match is None or match(p)
        ]
    if is_glob:
        infos = fs.glob(path, detail=True)
    elif fs.isdir(path):
        pattern = spec.glob or "**"
        infos = fs.glob(f"{path.rstrip('/')}/{pattern}", detail=True)
        if pattern == "**":  # some fsspec versions don't list files with a bare '**'
            infos = {**infos, **fs.find(path, detail=True)}
    elif fs.exists(path):
        infos = {path: fs.info(path)}
    else:
        raise FileNotFoundError(f"input not found: {location}")
    out = []
    for p, info in infos.items():
        if info.get("type") != "file":
            continue
        if (
            spec.glob
            and not fs.isdir(path)
            and not fnmatch.fnmatch(p.rsplit("/", 1)[-1], spec.glob)
        ):
            continue
        out.append((url_of(p), source_of(p), int(info.get("size") or 0)))
    return out


def list_inputs(
    specs: list[InputSpec],
    domain_rules: list[DomainRule] | None = None,
    skipped: list[SkippedEntry] | None = None,
) -> list[InputFile]:
    """Every file the specs name, sorted by source; a file named twice keeps its first spec.
    Formats and domain rules read the source (so they do not depend on the checkout folder).
    Entries not listed are logged (a warning per reason) and appended to ``skipped``."""
    rules = DEFAULT_DOMAIN_RULES if domain_rules is None else domain_rules
    seen: dict[str, InputFile] = {}
    found: list[SkippedEntry] = []
    for spec in specs:
        for url, source, size in _expand(spec, found):
            if url in seen:
                continue
            fmt = guess_format(source) if spec.format == "auto" else spec.format
            seen[url] = InputFile(
                url=url,
                format=fmt,
                domain=spec.domain or domain_of(source, rules),
                size=size,
                text_field=spec.text_field,
                rot13=spec.rot13,
                source=source,
            )
    by_reason: dict[str, list[str]] = {}
    for entry in found:
        by_reason.setdefault(entry.reason, []).append(readable_name(entry.path))
    for reason, paths in sorted(by_reason.items()):
        _log.warning(
            "inputs: %d skipped, %s (%s), e.g. %s",
            len(paths),
            reason,
            SKIP_REASONS.get(reason, ""),
            ", ".join(paths[:3]),
        )
    if skipped is not None:
        skipped += found
    return sorted(seen.values(), key=_order)


def skipped_report(skipped: list[SkippedEntry]) -> list[dict[str, str]]:
    """JSON-able records of skipped entries (paths as valid UTF-8)."""
    return [
        {"path": readable_name(s.path), "reason": s.reason, "detail": s.detail} for s in skipped
    ]


def _order(f: InputFile) -> tuple[str, str]:
    return (f.name, f.url)


def expected_bytes(f: InputFile) -> int:
    """The bytes a file is expected to give once decompressed: a gzip file's declared size
    (:func:`curate.readers.text.gzip_declared_size`) when larger than the file, else its size.
    WARC files (gzip per record, each bounded) count their size."""
    name = f.url.lower()
    if name.endswith(".gz") and not name.endswith((".warc.gz", ".arc.gz")):
        return max(f.size, gzip_declared_size(f.url) or 0)
    return f.size


def plan_parts(
    files: list[InputFile], files_per_part: int = 256, bytes_per_part: int = 64 << 20
) -> list[list[InputFile]]:
    """Cut the (sorted) file list into consecutive parts of at most ``files_per_part`` files and,
    unless a single file is bigger, ``bytes_per_part`` bytes, counted by :func:`expected_bytes`
    (decompressed). Same files ⇒ same parts."""
    if files_per_part < 1 or bytes_per_part < 1:
        raise ValueError("files_per_part and bytes_per_part must be positive")
    parts: list[list[InputFile]] = []
    current: list[InputFile] = []
    size = 0
    for f in sorted(files, key=_order):
        n = expected_bytes(f)
        if current and (len(current) >= files_per_part or size + n > bytes_per_part):
            parts.append(current)
            current, size = [], 0
        current.append(f)
        size += n
    if current:
        parts.append(current)
    return parts
