"""Read samples of what each stage kept and removed, per reason, to judge filters by eye.

``inspect_run(run_dir)`` returns plain text: for every stage (or one), its counters, then up to
``per_reason`` documents it kept, up to ``per_reason`` for each removal reason and each
quarantine reason, each with its id, source, domain, language, the stage's score columns and
a snippet of its text. A document a dedup stage removed in favour of another (``duplicate_of``,
``contained_in``) also shows that survivor: its id, source and rendition, followed along the
chain to the copy the stage kept. The sample is drawn by a stable hash of (seed, id), so the
same seed shows the same documents and another seed shows others. ``sluice inspect RUN``
prints it.
"""

from __future__ import annotations

import heapq
import re
from typing import Any

import pyarrow as pa

from curate.mix import stable_uniform
from curate.rundir import load_stats, part_files, stage_order
from curate.schema import DOC_SCHEMA
from curate.storage import read_parquet

KEPT = "(kept)"
SNIPPET_CHARS = 400
_BASE = set(DOC_SCHEMA.names) | {"removed_by", "reason", "detail", "stage"}
_SPACE = re.compile(r"\s+")


def snippet(text: str | None, chars: int = SNIPPET_CHARS) -> str:
    """The start of ``text`` on one line (whitespace runs collapsed, control chars escaped)."""
    if not text:
        return ""
    flat = _SPACE.sub(" ", text[: chars * 4]).strip()
    flat = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in flat)
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        items = {k: x for k, x in v.items() if x not in (None, 0, 0.0, False)}
        return "{" + ", ".join(f"{k}: {_fmt_value(x)}" for k, x in items.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_value(x) for x in v[:8]) + (", …" if len(v) > 8 else "") + "]"
    s = str(v)
    return s if len(s) <= 80 else s[:79] + "…"


def sample_rows(urls: list[str], per_reason: int, seed: int, kept: bool) -> dict[str, list[dict]]:
    """Up to ``per_reason`` rows per reason over the files, lowest stable hash first."""
    heaps: dict[str, list[tuple[float, str, int, int]]] = {}
    tables: list[pa.Table] = []
    for fi, url in enumerate(urls):
        t = read_parquet(url)
        tables.append(t)
        if t.num_rows == 0:
            continue
        ids = t.column("id").to_pylist()
        reasons = [KEPT] * t.num_rows if kept else t.column("reason").to_pylist()
        for ri, (u, i, r) in enumerate(
            zip(stable_uniform(ids, seed, "inspect").tolist(), ids, reasons, strict=True)
        ):
            h = heaps.setdefault(r or "(none)", [])
            item = (-u, i, fi, ri)
            if len(h) < per_reason:
                heapq.heappush(h, item)
            elif item > h[0]:
                heapq.heapreplace(h, item)
    out: dict[str, list[dict]] = {}
    for reason, h in sorted(heaps.items()):
        picked = sorted(h, reverse=True)  # lowest hash first
        out[reason] = [tables[fi].slice(ri, 1).to_pylist()[0] for _, _, fi, ri in picked]
    return out


SURVIVOR_COLUMNS = ("duplicate_of", "contained_in")  # dedup stages: the id a removed doc defers to


def survivor_index(urls: list[str]) -> dict[str, tuple[str, str | None]]:
    """id -> (source, id it defers to or None) over a stage's kept and removed files."""
    index: dict[str, tuple[str, str | None]] = {}
    for url in urls:
        t = read_parquet(url)
        links = [c for c in SURVIVOR_COLUMNS if c in t.column_names]
        for r in t.select(["id", "source", *links]).to_pylist():
            index[r["id"]] = (r["source"], next((r[c] for c in links if r[c]), None))
    return index


def _survivor_lines(row: dict, index: dict[str, tuple[str, str | None]]) -> list[str]:
    """``survivor: ...`` lines for a removed dedup document (the chain to the kept copy)."""
    from curate.dedup.common import rendition

    target = next((row[c] for c in SURVIVOR_COLUMNS if row.get(c)), None)
    lines, seen = [], set()
    while target and target not in seen and len(lines) < 5:
        seen.add(target)
        source, further = index.get(target, ("(not in this stage's output)", None))
        state = "removed by this stage too" if further else "kept"
        lines.append(f"    survivor: {target}  {source} [{rendition(source, None)}]  ({state})")
        target = further
    return lines


def _doc_lines(row: dict, chars: int) -> list[str]:
    head = f"  - {row.get('id')}  {row.get('source')}"
    if row.get("offset"):
        head += f" #{row['offset']}"
    tags = [str(row[k]) for k in ("domain", "lang") if row.get(k)]
    if tags:
        head += f"  [{' '.join(tags)}]"
    lines = [head]
    scores = {k: v for k, v in row.items() if k not in _BASE and v is not None}
    if scores:
        lines.append("    " + "  ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(scores.items())))
    if row.get("detail"):
        lines.append(f"    detail: {snippet(row['detail'], chars)}")
    if "text" in row:
        lines.append(f"    | {snippet(row.get('text'), chars)}")
    return lines


def inspect_stage(
    run_dir: str, stage: str, per_reason: int = 3, seed: int = 0, chars: int = SNIPPET_CHARS
) -> str:
    """Samples of one stage's kept, removed (per reason) and quarantined (per reason) docs."""
    stats = {s.stage: s for s in load_stats(run_dir)}
    lines = [f"== {stage} " + "=" * max(0, 70 - len(stage))]
    s = stats.get(stage)
    if s is not None:
        removed = f" {s.removed}" if s.removed else ""
        quarantined = f" {s.quarantined}" if s.quarantined else ""
        lines.append(
            f"in {s.docs_in:,}  kept {s.kept:,}  removed {s.removed_total:,}{removed}  "
            f"quarantined {s.quarantined_total:,}{quarantined}"
        )
    for kind, label in (("kept", "kept"), ("removed", "removed"), ("quarantine", "quarantined")):
        urls = part_files(run_dir, stage, kind)
        groups = sample_rows(urls, per_reason, seed, kept=kind == "kept")
        links = kind == "removed" and any(
            r.get(c) for rows in groups.values() for r in rows for c in SURVIVOR_COLUMNS
        )
        index = survivor_index(part_files(run_dir, stage, "kept") + urls) if links else {}
        for reason, rows in groups.items():
            count = ""
            if s is not None and kind != "kept":
                n = (s.removed if kind == "removed" else s.quarantined).get(reason)
                count = f" ({n:,} docs)" if n is not None else ""
            title = f"-- {label}" + ("" if kind == "kept" else f": {reason}") + count
            lines.append(title)
            for row in rows:
                lines += _doc_lines(row, chars)
                if links:
                    lines += _survivor_lines(row, index)
    return "\n".join(lines)


def inspect_run(
    run_dir: str,
    per_reason: int = 3,
    stage: str | None = None,
    seed: int = 0,
    chars: int = SNIPPET_CHARS,
) -> str:
    """Samples of kept and removed documents for every stage of the run (or only ``stage``)."""
    stages = stage_order(run_dir)
    if stage is not None:
        if stage not in stages:
            known = ", ".join(stages) or "none"
            raise ValueError(f"no stage {stage!r} with part files in {run_dir} (stages: {known})")
        stages = [stage]
    if not stages:
        return f"{run_dir}: no stage output yet\n"
    return "\n\n".join(inspect_stage(run_dir, s, per_reason, seed, chars) for s in stages) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m curate.inspect RUN [--stage S] [-n N] [--seed K] [--chars C]``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="sluice inspect", description="sample kept/removed/quarantined documents per reason"
    )
    p.add_argument("run", help="run directory, e.g. runs/default")
    p.add_argument("--stage", help="only this stage")
    p.add_argument("-n", type=int, default=3, help="documents per reason (default 3)")
    p.add_argument("--seed", type=int, default=0, help="another seed shows other documents")
    p.add_argument("--chars", type=int, default=SNIPPET_CHARS, help="snippet length")
    args = p.parse_args(argv)
    try:
        print(inspect_run(args.run, args.n, args.stage, args.seed, args.chars), end="")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
