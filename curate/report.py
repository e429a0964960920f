"""The run report: counters per stage (``stats.json``), ``timings.json``, the funnel as a
markdown table and a PNG, and the mixture (target vs achieved) as JSON, markdown and PNG.

``stats.json`` holds only counts (no seconds), so the same run gives the same file; the
seconds go to ``timings.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from curate import mix
from curate.config import PipelineConfig
from curate.layout import EXTRACT_STAGE, RunLayout
from curate.stage import StageStats
from curate.storage import exists, join, read_json, write_bytes_atomic, write_json_atomic


def stage_counts(stats: StageStats) -> dict[str, Any]:
    """The counters of one stage without its seconds."""
    d = stats.to_dict()
    d.pop("seconds", None)
    d["removed_total"] = stats.removed_total
    d["quarantined_total"] = stats.quarantined_total
    return d


def funnel_markdown(stats: Mapping[str, StageStats]) -> str:
    """One row per stage: documents in, kept, removed, quarantined, and the reasons."""
    lines = [
        "| stage | docs in | kept | removed | quarantined | kept % | MB in | MB kept | reasons |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in stats.items():
        reasons = ", ".join(
            [f"{r}: {n}" for r, n in sorted(s.removed.items(), key=lambda x: -x[1])]
            + [
                f"quarantine {r}: {n}"
                for r, n in sorted(s.quarantined.items(), key=lambda x: -x[1])
            ]
        )
        share = s.kept / s.docs_in if s.docs_in else 0.0
        lines.append(
            f"| {name} | {s.docs_in:,} | {s.kept:,} | {s.removed_total:,} | "
            f"{s.quarantined_total:,} | {share:.1%} | {s.bytes_in / 1e6:.2f} | "
            f"{s.bytes_kept / 1e6:.2f} | {reasons or '-'} |"
        )
    return "\n".join(lines) + "\n"


def mixture_achieved(mixed_parts: list[Mapping[str, Any]]) -> dict[str, float]:
    """Selected tokens per mixture key, summed over the parts' mix counters."""
    return mix.sum_counts(p.get("selected_tokens", {}) for p in mixed_parts)


def extract_counters(run: str) -> dict[str, int]:
    """The readers' extra counters (files, raw bytes, ...) summed over the extract markers."""
    layout = RunLayout(run)
    total: dict[str, int] = {}
    for i in range(layout.n_parts()):
        marker = read_json(layout.marker(EXTRACT_STAGE, i))
        for k, v in marker.get("counters", {}).items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


def quality_model_summary(run: str) -> dict[str, Any] | None:
    """Sizes and held-out metrics of the model the run trained (None when it trained none)."""
    from curate.filters.quality import STATS_FILE

    url = RunLayout(run).fit_file("quality", STATS_FILE)
    if not exists(url):
        return None
    stats = read_json(url)
    keys = ("documents", "train_examples", "held_out_examples", "held_out", "held_out_at_threshold")
    return {k: stats[k] for k in keys if k in stats}


def quality_model_markdown(summary: Mapping[str, Any] | None) -> str:
    """One line on the run's quality model: held-out precision / recall / F1."""
    if not summary:
        return ""
    h = summary["held_out"]
    n = summary["held_out_examples"]
    docs = summary["documents"]
    return (
        f"\nQuality model trained on this run ({docs['positive']:,} positive / "
        f"{docs['negative']:,} negative documents): held-out precision {h['precision']:.3f}, "
        f"recall {h['recall']:.3f}, F1 {h['f1']:.3f} at {h['threshold']:g} "
        f"({n['positive']:,} / {n['negative']:,} held-out examples).\n"
    )


def write_report(
    cfg: PipelineConfig,
    stats: Mapping[str, StageStats],
    timings: Mapping[str, float],
    mixed_parts: list[Mapping[str, Any]],
    skipped: Mapping[str, int] | None = None,
    memory: Mapping[str, Mapping[str, float | None]] | None = None,
    on_sections: Callable[[list[Any]], None] | None = None,
) -> dict[str, Any]:
    """Write stats.json, timings.json, funnel.{md,png}, mixture.{json,md,png}, report.html;
    return stats. ``on_sections``: called with the report's sections (``curate.html_report``),
    computed once (the flow publishes them as artifacts)."""
    run = cfg.run_url
    layout = RunLayout(run)
    plan = mix.MixPlan.model_validate(read_json(layout.mix_plan))
    mixture = mix.mixture_report(plan, mixture_achieved(mixed_parts))
    manifest = read_json(join(layout.shards_dir, "manifest.json"))
    summary = {
        "run": cfg.name,
        "config_hash": cfg.hash(),
        "stages": {name: stage_counts(s) for name, s in stats.items()},
        "extract_counters": extract_counters(run),
        "quality_model": quality_model_summary(run),
        "mixture": mixture,
        "shards": {
            split: {"sequences": info["sequences"], "tokens": info["tokens"]}
            for split, info in manifest["splits"].items()
        },
    }
    write_json_atomic(summary, layout.stats)
    write_json_atomic(
        {
            "steps": {k: round(v, 3) for k, v in timings.items()},
            "stage_seconds": {name: round(s.seconds, 3) for name, s in stats.items()},
            "skipped_parts": dict(skipped or {}),
            # peak RSS MiB per step: its biggest call ("tasks"), the driver meanwhile ("driver")
            "peak_rss_mib": {k: dict(v) for k, v in (memory or {}).items()},
        },
        layout.timings,
    )
    from curate.html_report import (  # html_report reads run files
        funnel_png,
        report_sections,
        write_report_html,
    )

    funnel = funnel_markdown(stats) + quality_model_markdown(summary["quality_model"])
    write_bytes_atomic(funnel.encode(), layout.report_file("funnel.md"))
    write_json_atomic(mixture, layout.report_file("mixture.json"))
    write_bytes_atomic(mix.mixture_markdown(mixture).encode(), layout.report_file("mixture.md"))
    sections = report_sections(run)  # reads back the files written above
    # the funnel and mixture figures are the report's own (drawn once, from the same files)
    figures = {s.key: s.png for s in sections if s.png}
    funnel_figure = figures.get("funnel") or funnel_png(list(stats.values()))
    write_bytes_atomic(funnel_figure, layout.report_file("funnel.png"))
    mixture_figure = figures.get("mixture") or mix.mixture_png(mixture)
    write_bytes_atomic(mixture_figure, layout.report_file("mixture.png"))
    write_report_html(run, sections=sections)
    if on_sections is not None:
        on_sections(sections)
    return {**summary, "funnel_markdown": funnel, "mixture_markdown": mix.mixture_markdown(mixture)}
