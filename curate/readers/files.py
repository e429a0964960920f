"""Input listing: configured inputs (local paths, globs, fsspec URLs) → sorted raw files.

An :class:`InputSpec` names a directory, a file, a glob or an fsspec URL (``file://``,
``memory://``, ``s3://`` ...). :func:`list_inputs` expands every spec into :class:`InputFile`
records, each with its format (from the spec, or guessed from the path in ``auto`` mode) and its
domain (the spec's ``domain`` if set, else the first matching :class:`DomainRule`). The listing is
sorted by URL and deduplicated, so the same inputs always give the same parts.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field

Format = Literal["auto", "html", "pdf", "code", "text", "fortune", "warc", "jsonl", "parquet"]
CONCRETE_FORMATS = ("html", "pdf", "code", "text", "fortune", "warc", "jsonl", "parquet")

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

    url: str
    format: str  # one of CONCRETE_FORMATS
    domain: str
    size: int
    text_field: str = "text"
    rot13: bool | None = None


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
    return "text"


def domain_of(url: str, rules: list[DomainRule]) -> str:
    for rule in rules:
        if rule.matches(url):
            return rule.domain
    return FALLBACK_DOMAIN


def _expand(spec: InputSpec) -> list[tuple[str, int]]:
    """(url, size) of every file a spec names, with the URL protocol kept."""
    fs, path = fsspec.core.url_to_fs(spec.path)
    protocol = spec.path.split("://", 1)[0] if "://" in spec.path else None

    def url_of(p: str) -> str:
        return fs.unstrip_protocol(p) if protocol else p

    if any(c in path for c in "*?["):
        infos = fs.glob(path, detail=True)
    elif fs.isdir(path):
        pattern = spec.glob or "**"
        infos = fs.glob(f"{path.rstrip('/')}/{pattern}", detail=True)
        if pattern == "**":  # some fsspec versions don't list files with a bare '**'
            infos = {**infos, **fs.find(path, detail=True)}
    elif fs.exists(path):
        infos = {path: fs.info(path)}
    else:
        raise FileNotFoundError(f"input not found: {spec.path}")
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
        out.append((url_of(p), int(info.get("size") or 0)))
    return out


def list_inputs(
    specs: list[InputSpec], domain_rules: list[DomainRule] | None = None
) -> list[InputFile]:
    """Every file the specs name, sorted by URL; a file named twice keeps its first spec."""
    rules = DEFAULT_DOMAIN_RULES if domain_rules is None else domain_rules
    seen: dict[str, InputFile] = {}
    for spec in specs:
        for url, size in _expand(spec):
            if url in seen:
                continue
            fmt = guess_format(url) if spec.format == "auto" else spec.format
            seen[url] = InputFile(
                url=url,
                format=fmt,
                domain=spec.domain or domain_of(url, rules),
                size=size,
                text_field=spec.text_field,
                rot13=spec.rot13,
            )
    return [seen[u] for u in sorted(seen)]


def plan_parts(
    files: list[InputFile], files_per_part: int = 256, bytes_per_part: int = 64 << 20
) -> list[list[InputFile]]:
    """Cut the (sorted) file list into consecutive parts of at most ``files_per_part`` files and,
    unless a single file is bigger, ``bytes_per_part`` bytes. Same files ⇒ same parts."""
    if files_per_part < 1 or bytes_per_part < 1:
        raise ValueError("files_per_part and bytes_per_part must be positive")
    parts: list[list[InputFile]] = []
    current: list[InputFile] = []
    size = 0
    for f in sorted(files, key=lambda f: f.url):
        if current and (len(current) >= files_per_part or size + f.size > bytes_per_part):
            parts.append(current)
            current, size = [], 0
        current.append(f)
        size += f.size
    if current:
        parts.append(current)
    return parts
