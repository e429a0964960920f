"""A run's report: one self-contained ``report.html`` plus the same figures as markdown/PNG.

``report_sections(run_dir)`` reads the run directory (see ``curate.rundir``) and returns
:class:`Section` objects (a table, a PNG, a one-line summary); ``write_report_html`` renders
them into ``<run>/report.html`` with inline CSS and base64 PNGs (no external URL, opens offline);
``Section.markdown()`` gives the same content for Prefect artifacts (``flows/artifacts.py``).

Sections, each present only when the run has the data: funnel (stats.json or done markers),
removals by reason, languages and domains of the last stage's kept documents, near-duplicate
cluster sizes (``minhash_cluster``), dedup by kind (exact / near / contained / paragraph, with
bytes), mixture target vs achieved, tokenizer compression
(bytes/token measured on a sample of kept documents per domain), loss vs prediction
(``metrics.jsonl`` and ``*prediction*.json`` of ``<run>/train`` or a given training dir).
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import nan
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate import mix
from curate.layout import RunLayout
from curate.plots import BLUE, RED, hbar_png, vbar_png
from curate.rundir import (
    has_column,
    last_doc_stage,
    load_stats,
    part_files,
    read_columns,
    stage_order,
    take_rows,
)
from curate.stage import StageStats
from curate.storage import exists, join, local_copy, read_json, write_bytes_atomic

TOKENIZER_SAMPLE_DOCS = 200  # per domain, for bytes/token


@dataclass
class Section:
    """One figure of the report: a table, an optional PNG and a one-line summary."""

    key: str  # artifact key: lowercase letters, digits and dashes
    title: str
    summary: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    png: bytes | None = None

    def table_markdown(self) -> str:
        if not self.header:
            return ""
        lines = [
            "| " + " | ".join(_md_cell(h) for h in self.header) + " |",
            "|" + "|".join("---" for _ in self.header) + "|",
        ]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def markdown(self, image: bool = True) -> str:
        """Title, summary, table and (``image``) the PNG as a data URI."""
        parts = [f"## {self.title}", ""]
        if self.summary:
            parts += [self.summary, ""]
        if self.header:
            parts.append(self.table_markdown())
        if image and self.png:
            parts += [f"![{self.title}]({png_data_uri(self.png)})", ""]
        return "\n".join(parts)

    def html(self) -> str:
        out = [f'<section id="{html.escape(self.key)}"><h2>{html.escape(self.title)}</h2>']
        if self.summary:
            out.append(f"<p>{html.escape(self.summary)}</p>")
        if self.png:
            out.append(f'<img alt="{html.escape(self.title)}" src="{png_data_uri(self.png)}">')
        if self.header:
            out.append("<table><thead><tr>")
            out += [f"<th>{html.escape(str(h))}</th>" for h in self.header]
            out.append("</tr></thead><tbody>")
            for row in self.rows:
                cells = "".join(
                    f'<td class="{"num" if _is_num(c) else ""}">{html.escape(_fmt(c))}</td>'
                    for c in row
                )
                out.append(f"<tr>{cells}</tr>")
            out.append("</tbody></table>")
        out.append("</section>")
        return "\n".join(out)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    if isinstance(v, float | np.floating):
        v = float(v)
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return "" if v is None else str(v)


def _md_cell(v: Any) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


# --- figures -----------------------------------------------------------------------------------


def funnel_png(stats: Sequence[StageStats]) -> bytes:
    """Horizontal bars: documents entering the run, then kept after each stage."""
    labels = ["input", *[s.stage for s in stats]]
    values = [stats[0].docs_in if stats else 0, *[s.kept for s in stats]]
    top = max(values) or 1
    return hbar_png(
        labels,
        values,
        "Funnel: documents kept after each stage",
        "documents",
        color=BLUE,
        notes=[f"{v:,} ({v / top:.1%})" for v in values],
    )


def bars_png(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str) -> bytes:
    """A horizontal bar chart (largest first, as given)."""
    return hbar_png(labels, values, title, xlabel)


def cluster_sizes_png(sizes: Counter) -> bytes:
    """Number of clusters per cluster size (log scale)."""
    xs = sorted(sizes)
    return vbar_png(
        [str(x) for x in xs],
        {"clusters": [sizes[x] for x in xs]},
        "Near-duplicate cluster sizes",
        "clusters",
        xlabel="documents in cluster",
        log=True,
        colors=(RED,),
    )


# --- sections ----------------------------------------------------------------------------------


def funnel_section(stats: Sequence[StageStats]) -> Section | None:
    if not stats:
        return None
    first = stats[0].docs_in or 1
    rows = [
        [
            s.stage,
            s.docs_in,
            s.kept,
            s.removed_total,
            s.quarantined_total,
            f"{s.kept / s.docs_in:.1%}" if s.docs_in else "",
            round(s.bytes_in / 1e6, 3),
            round(s.bytes_kept / 1e6, 3),
            round(s.seconds, 2),
        ]
        for s in stats
    ]
    last = stats[-1]
    return Section(
        key="funnel",
        title="Funnel",
        summary=f"{stats[0].docs_in:,} documents in, {last.kept:,} kept after {last.stage} "
        f"({last.kept / first:.1%}).",
        header=[
            "stage",
            "docs in",
            "kept",
            "removed",
            "quarantined",
            "kept %",
            "MB in",
            "MB kept",
            "seconds",
        ],
        rows=rows,
        png=funnel_png(stats),
    )


def removals_section(stats: Sequence[StageStats]) -> Section | None:
    rows = []
    for s in stats:
        for outcome, counts in (("removed", s.removed), ("quarantined", s.quarantined)):
            for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                share = f"{n / s.docs_in:.2%}" if s.docs_in else ""
                rows.append([s.stage, outcome, reason, n, share])
    if not stats:
        return None
    top = sorted(rows, key=lambda r: -r[3])[:20]
    png = (
        bars_png(
            [f"{r[0]}: {r[2]}" for r in top],
            [r[3] for r in top],
            "Documents removed or quarantined, by reason",
            "documents",
        )
        if top
        else None
    )
    total = sum(r[3] for r in rows)
    return Section(
        key="removed-by-reason",
        title="Removed and quarantined, by reason",
        summary=f"{total:,} documents removed or quarantined, {len(rows)} (stage, reason) pairs.",
        header=["stage", "outcome", "reason", "docs", "% of stage input"],
        rows=rows,
        png=png,
    )


HISTOGRAM_COLUMNS = ["lang", "domain"]


def kept_sizes(run_dir: str, stage: str | None = None) -> pa.Table | None:
    """``id``, the histogram columns and ``text_bytes`` of the kept documents of ``stage``
    (default: the last), read part by part; None when there are none."""
    stage = stage or last_doc_stage(run_dir)
    if stage is None:
        return None
    urls = part_files(run_dir, stage, "kept")
    return read_columns(urls, ["id", *HISTOGRAM_COLUMNS], lengths=["text"])


def histogram_section(
    run_dir: str, column: str, stage: str | None = None, kept: pa.Table | None = None
) -> Section | None:
    """Documents and bytes per value of ``column`` (lang, domain) among the kept documents
    (``kept``: :func:`kept_sizes`, read once for both histograms)."""
    stage = stage or last_doc_stage(run_dir)
    if stage is None:
        return None
    table = kept if kept is not None else kept_sizes(run_dir, stage)
    if table is None or column not in table.column_names:
        return None
    values = ["(none)" if v is None else v for v in table.column(column).to_pylist()]
    nbytes = (
        table.column("text_bytes").to_numpy()
        if "text_bytes" in table.column_names
        else np.zeros(len(values))
    )
    docs: Counter = Counter(values)
    by_bytes: Counter = Counter()
    for v, b in zip(values, nbytes.tolist(), strict=True):
        by_bytes[v] += int(b)
    total = sum(docs.values()) or 1
    order = sorted(docs, key=lambda k: (-docs[k], k))
    rows = [[k, docs[k], f"{docs[k] / total:.1%}", round(by_bytes[k] / 1e6, 3)] for k in order]
    shown = order[:30]
    name = {"lang": "Languages", "domain": "Domains"}.get(column, column)
    return Section(
        key=f"{column}-histogram".replace("_", "-"),
        title=f"{name} of kept documents",
        summary=f"{len(order)} values of {column} over {total:,} documents kept after {stage}.",
        header=[column, "docs", "share", "MB"],
        rows=rows,
        png=bars_png(shown, [docs[k] for k in shown], f"{name} (after {stage})", "documents"),
    )


def cluster_section(run_dir: str, stages: Sequence[str]) -> Section | None:
    """Sizes of ``minhash_cluster`` clusters, over the kept and removed rows of the first stage
    that has the column (where the duplicates were still present)."""
    for stage in stages:
        urls = part_files(run_dir, stage, "kept") + part_files(run_dir, stage, "removed")
        if not urls or not has_column(urls, "minhash_cluster"):
            continue
        table = read_columns(urls, ["minhash_cluster"])
        clusters = table.column("minhash_cluster").to_pylist()
        per_cluster = Counter(c for c in clusters if c is not None)
        sizes = Counter(per_cluster.values())
        singles = sum(c is None for c in clusters)  # no near duplicate: a cluster of its own
        if singles:
            sizes[1] += singles
        dup_clusters = sum(n for size, n in sizes.items() if size > 1)
        dup_docs = sum(size * n for size, n in sizes.items() if size > 1)
        rows = [[size, sizes[size], size * sizes[size]] for size in sorted(sizes)]
        return Section(
            key="dedup-clusters",
            title="Near-duplicate clusters",
            summary=f"{stage}: {dup_clusters:,} clusters of 2 or more documents hold "
            f"{dup_docs:,} of {table.num_rows:,} documents; largest cluster "
            f"{max(per_cluster.values(), default=0):,}.",
            header=["cluster size", "clusters", "docs"],
            rows=rows,
            png=cluster_sizes_png(sizes) if sizes else None,
        )
    return None


# (kind, removal reason, column naming the group a removed document belongs to)
DEDUP_KINDS = (
    ("exact", "exact_duplicate", "duplicate_of"),
    ("near", "near_duplicate", "minhash_cluster"),
    ("contained", "contained_in", "contained_in"),
    ("paragraph", "only_repeated_paragraphs", None),
)


def dedup_kinds_section(run_dir: str, stages: Sequence[str]) -> Section | None:
    """Dedup by kind (exact / near / contained / paragraph): groups, documents and bytes removed
    per stage, and for paragraph dedup the bytes cut per domain."""
    rows: list[list[Any]] = []
    for stage in stages:
        removed = read_columns(
            part_files(run_dir, stage, "removed"),
            ["reason", "domain", *{c for _, _, c in DEDUP_KINDS if c}],
            lengths=["text"],
        )
        if removed is not None and "reason" in removed.column_names and removed.num_rows:
            reasons = np.asarray(removed.column("reason").to_pylist(), dtype=object)
            nbytes = (
                removed.column("text_bytes").to_numpy()
                if "text_bytes" in removed.column_names
                else None
            )
            for kind, reason, group in DEDUP_KINDS:
                hit = reasons == reason
                if not hit.any() or nbytes is None:
                    continue
                groups = ""
                if group and group in removed.column_names:
                    values = removed.column(group).to_pylist()
                    groups = len({v for v, h in zip(values, hit.tolist(), strict=True) if h})
                rows.append([kind, stage, "all", groups, int(hit.sum()), 0, int(nbytes[hit].sum())])
        urls = part_files(run_dir, stage, "kept")
        if urls and has_column(urls, "paragraph_bytes_removed"):
            kept = read_columns(urls, ["domain", "paragraph_bytes_removed", "paragraphs_removed"])
            domains = kept.column("domain").to_pylist()
            cut = kept.column("paragraph_bytes_removed").to_numpy(zero_copy_only=False)
            count = kept.column("paragraphs_removed").to_numpy(zero_copy_only=False)
            for domain in sorted(set(domains)):
                mine = np.asarray([d == domain for d in domains]) & (cut > 0)
                if mine.any():
                    rows.append(
                        [
                            "paragraph",
                            stage,
                            domain,
                            int(count[mine].sum()),
                            0,
                            int(mine.sum()),
                            int(cut[mine].sum()),
                        ]
                    )
    if not rows:
        return None
    by_kind: Counter = Counter()
    for r in rows:
        by_kind[r[0]] += r[6]
    table = [[*r[:6], round(r[6] / 1e6, 3)] for r in rows]
    kinds = [k for k, _, _ in DEDUP_KINDS if k in by_kind]
    return Section(
        key="dedup-kinds",
        title="Dedup by kind",
        summary="Removed by dedup: "
        + ", ".join(f"{k} {by_kind[k] / 1e6:.2f} MB" for k in kinds)
        + ". Groups: clusters (exact, near), containers (contained), paragraph occurrences cut.",
        header=["kind", "stage", "domain", "groups", "docs removed", "docs trimmed", "MB removed"],
        rows=table,
        png=bars_png(kinds, [by_kind[k] / 1e6 for k in kinds], "Bytes removed by dedup kind", "MB"),
    )


def find_mixture_report(run_dir: str) -> dict | None:
    """The run's ``mixture.json`` (``curate.mix.mixture_report``), None before it is written."""
    url = RunLayout(run_dir).report_file("mixture.json")
    return read_json(url) if exists(url) else None


def _manifest(run_dir: str) -> tuple[str, dict] | None:
    """(the shards folder, its manifest) of the run; None before the shards are written."""
    layout = RunLayout(run_dir)
    url = join(layout.shards_dir, "manifest.json")
    return (layout.shards_dir, read_json(url)) if exists(url) else None


def mixture_section(run_dir: str) -> Section | None:
    report = find_mixture_report(run_dir)
    if report is not None:
        rows = [
            [
                r["key"],
                f"{r['target_weight']:.2%}",
                f"{r['achieved_weight']:.2%}",
                r["available_tokens"],
                r["target_tokens"],
                r["achieved_tokens"],
                round(r["epochs"], 2),
                bool(r["capped"]),
            ]
            for r in report["rows"]
        ]
        return Section(
            key="mixture",
            title="Mixture: target vs achieved",
            summary=f"Budget {report['budget_tokens']:,} tokens, achieved "
            f"{report['achieved_tokens']:,} ({report.get('token_source') or 'tokens'}).",
            header=[
                "key",
                "target",
                "achieved",
                "available tok",
                "target tok",
                "achieved tok",
                "epochs",
                "capped",
            ],
            rows=rows,
            png=mix.mixture_png(report),
        )
    found = _manifest(run_dir)
    if found is None:
        return None
    m = found[1]
    target, achieved = m.get("mixture_target") or {}, m.get("mixture_achieved") or {}
    if not achieved:
        return None
    tot = sum(target.values()) or 1.0
    keys = sorted(set(target) | set(achieved))
    pseudo = {
        "achieved_tokens": sum(s.get("tokens", 0) for s in m.get("splits", {}).values()),
        "rows": [
            {
                "key": k,
                "target_weight": target.get(k, 0.0) / tot,
                "achieved_weight": achieved.get(k, 0.0),
            }
            for k in keys
        ],
    }
    return Section(
        key="mixture",
        title="Mixture: target vs achieved (token shares in the shards)",
        summary=f"From the shard manifest: {pseudo['achieved_tokens']:,} tokens in all splits.",
        header=["key", "target", "achieved"],
        rows=[
            [r["key"], f"{r['target_weight']:.2%}", f"{r['achieved_weight']:.2%}"]
            for r in pseudo["rows"]
        ],
        png=mix.mixture_png(pseudo),
    )


def find_tokenizer(run_dir: str) -> str | None:
    """Local path of the run's SentencePiece model: the shard manifest's, else the tokenizer
    step's; None before either exists."""
    found = _manifest(run_dir)
    if found is not None:
        directory, m = found
        path = m.get("tokenizer", {}).get("path")
        if path:
            url = path if path.startswith("/") else join(directory, path)
            if exists(url):
                return local_copy(url)
    url = RunLayout(run_dir).tokenizer_model
    return local_copy(url) if exists(url) else None


def tokenizer_section(
    run_dir: str, stage: str | None = None, kept: pa.Table | None = None
) -> Section | None:
    """Bytes per token per domain, measured on up to TOKENIZER_SAMPLE_DOCS kept docs each
    (``kept``: :func:`kept_sizes`, when already read)."""
    model = find_tokenizer(run_dir)
    stage = stage or last_doc_stage(run_dir)
    if model is None or stage is None:
        return None
    from curate.tokenizer import byte_and_token_counts, load_tokenizer

    sp = load_tokenizer(model)
    urls = part_files(run_dir, stage, "kept")
    table = kept if kept is not None else kept_sizes(run_dir, stage)  # the texts: sampled ones
    if table is None or "text_bytes" not in table.column_names:
        return None
    ids = table.column("id").to_pylist() if "id" in table.column_names else []
    order = np.argsort(mix.stable_uniform(ids, 0, "report")) if ids else np.arange(table.num_rows)
    domains = (
        table.column("domain").to_pylist()
        if "domain" in table.column_names
        else ["all"] * table.num_rows
    )
    picked: dict[str, list[int]] = {}
    for i in order.tolist():
        bucket = picked.setdefault(domains[i], [])
        if len(bucket) < TOKENIZER_SAMPLE_DOCS:
            bucket.append(i)
    rows = [i for d in picked for i in picked[d]]
    text_of = dict(zip(rows, take_rows(urls, "text", np.asarray(rows, np.int64)), strict=True))
    sample = {d: [text_of[i] for i in picked[d]] for d in picked}
    rows = []
    total_bytes = total_tokens = 0  # each sampled text encoded once
    for d in sorted(sample):
        t = sample[d]
        n_bytes, n_tokens = byte_and_token_counts(sp, t)
        total_bytes, total_tokens = total_bytes + n_bytes, total_tokens + n_tokens
        rows.append([d, len(t), n_bytes, round(n_bytes / n_tokens if n_tokens else nan, 3)])
    overall = total_bytes / total_tokens if total_tokens else nan
    summary_path = Path(str(model) + ".json")
    extra = ""
    if summary_path.exists():
        s = json.loads(summary_path.read_text())
        cfg = s.get("config", {})
        extra = f" Trained on {s.get('bytes', 0):,} bytes ({cfg.get('model_type', '?')})."
    return Section(
        key="tokenizer",
        title="Tokenizer compression",
        summary=f"{Path(model).name}: vocabulary {sp.get_piece_size():,}, "
        f"{overall:.3f} bytes/token over {sum(map(len, sample.values())):,} sampled kept documents.{extra}",
        header=["domain", "docs sampled", "bytes", "bytes/token"],
        rows=rows,
        png=bars_png(
            [r[0] for r in rows],
            [r[3] for r in rows],
            "Bytes per token by domain",
            "UTF-8 bytes per token",
        ),
    )


def report_sections(
    run_dir: str, extra: Sequence[Section] = (), stage: str | None = None
) -> list[Section]:
    """Every section the run has data for, in reading order, then ``extra`` (sections other
    layers pass in: the training run's loss vs prediction, ``train.report.training_section``)."""
    stats = load_stats(run_dir)
    stages = stage_order(run_dir)
    kept = kept_sizes(run_dir, stage)
    candidates = [
        funnel_section(stats),
        removals_section(stats),
        *(histogram_section(run_dir, c, stage, kept) for c in HISTOGRAM_COLUMNS),
        cluster_section(run_dir, stages),
        dedup_kinds_section(run_dir, stages),
        mixture_section(run_dir),
        tokenizer_section(run_dir, stage, kept),
        *extra,
    ]
    return [s for s in candidates if s is not None]


def report_markdown(run_dir: str, extra: Sequence[Section] = (), images: bool = True) -> str:
    """The whole report as one markdown document (PNG as data URIs when ``images``)."""
    sections = report_sections(run_dir, extra)
    head = f"# Sluice run report: {run_dir.rstrip('/').rsplit('/', 1)[-1]}\n\n"
    return head + "\n".join(s.markdown(image=images) for s in sections)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
img{max-width:100%;display:block;margin:.5em 0}
nav a{margin-right:1em}.meta{color:#666;font-size:.85em}
"""


def report_html(
    run_dir: str, extra: Sequence[Section] = (), sections: Sequence[Section] | None = None
) -> str:
    """The report as one self-contained HTML page (inline CSS, base64 PNGs, no external URL);
    ``sections``: :func:`report_sections` already computed (then ``extra`` is not added)."""
    sections = report_sections(run_dir, extra) if sections is None else sections
    name = run_dir.rstrip("/").rsplit("/", 1)[-1]
    nav = " ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(s.html() for s in sections) or "<p>No stage output in this run yet.</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Sluice run {html.escape(name)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>Sluice run {html.escape(name)}</h1>\n"
        f'<p class="meta">{html.escape(run_dir)} &middot; generated {made}</p>\n'
        f"<nav>{nav}</nav>\n{body}\n</body></html>\n"
    )


def write_report_html(
    run_dir: str,
    extra: Sequence[Section] = (),
    out: str | None = None,
    sections: Sequence[Section] | None = None,
) -> str:
    """Write ``<run>/report.html`` (or ``out``); returns its path/URL. ``sections``: see
    :func:`report_html`."""
    url = out or RunLayout(run_dir).report_html
    write_bytes_atomic(report_html(run_dir, extra, sections).encode("utf-8"), url)
    return url


def main(argv: list[str] | None = None) -> int:
    """``python -m curate.html_report RUN [--out FILE]``: write report.html (``sluice report``
    adds the training run's section)."""
    import argparse

    p = argparse.ArgumentParser(prog="sluice report", description="write a run's report.html")
    p.add_argument("run", help="run directory, e.g. runs/default")
    p.add_argument("--out", help="output file (default RUN/report.html)")
    args = p.parse_args(argv)
    print(write_report_html(args.run, out=args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
