"""report.html and the inspect tool on a real run (toxicity → pii → near_dedup → mix → shards)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.html_report import report_markdown, report_sections, write_report_html
from curate.inspect import inspect_run
from curate.rundir import load_stats, part_files, stage_order
from tests.imports import modules_imported
from tests.run_sample import build_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("runs") / "sample-run"
    return path, build_run(path)


def _sections(path: Path) -> dict:
    return {s.key: s for s in report_sections(str(path))}


def test_report_html_is_self_contained(run):
    path, _ = run
    out = write_report_html(str(path))
    assert out == f"{path}/report.html"
    page = Path(out).read_text()
    # no external resource of any kind: every src is a data URI, no url(), no @import, no link
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "url(" not in page and "@import" not in page and "<link" not in page
    assert "<script" not in page
    images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(images) >= 7
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for key in (
        "funnel",
        "removed-by-reason",
        "lang-histogram",
        "domain-histogram",
        "dedup-clusters",
        "mixture",
        "tokenizer",
    ):
        assert f'<section id="{key}">' in page, key


def test_funnel_and_removals_match_the_counters(run):
    path, info = run
    stats = list(json.loads((path / "stats.json").read_text())["stages"].values())
    assert [s.stage for s in load_stats(str(path))] == ["toxicity", "pii", "near_dedup"]
    assert stage_order(str(path)) == ["toxicity", "pii", "near_dedup"]
    sec = _sections(path)
    funnel = {r[0]: r for r in sec["funnel"].rows}
    for s in stats:
        row = funnel[s["stage"]]
        assert row[1:5] == [
            s["docs_in"],
            s["kept"],
            sum(s["removed"].values()),
            sum(s["quarantined"].values()),
        ]
    removals = {(r[0], r[2]): r[3] for r in sec["removed-by-reason"].rows}
    assert removals == {
        (s["stage"], reason): n for s in stats for reason, n in s["removed"].items()
    }
    assert removals[("near_dedup", "near_duplicate")] > 10  # the llvm 13..16 manuals


def test_histograms_recount_the_last_stage(run):
    path, _ = run
    kept = pa.concat_tables(pq.read_table(u) for u in part_files(str(path), "near_dedup"))
    sec = _sections(path)
    for column in ("lang", "domain"):
        expect = Counter("(none)" if v is None else v for v in kept.column(column).to_pylist())
        got = {r[0]: r[1] for r in sec[f"{column}-histogram"].rows}
        assert got == dict(expect)
    assert {"en", "de", "es", "it"} <= {r[0] for r in sec["lang-histogram"].rows}


def test_part_by_part_reads_give_what_one_table_gives(run):
    """The report reads texts one part at a time (``read_columns(lengths=...)``, ``take_rows``):
    the same byte counts and the same texts as the parts concatenated."""
    from curate.rundir import read_columns, take_rows

    path, _ = run
    urls = part_files(str(path), "near_dedup")
    assert len(urls) > 1
    whole = pa.concat_tables(pq.read_table(u, columns=["domain", "text"]) for u in urls)
    sized = read_columns(urls, ["domain"], lengths=["text"])
    assert sized.column_names == ["domain", "text_bytes"]
    assert sized["domain"].to_pylist() == whole["domain"].to_pylist()
    assert sized["text_bytes"].to_pylist() == [len(t.encode()) for t in whole["text"].to_pylist()]
    rows = [whole.num_rows - 1, 0, whole.num_rows // 2, 1]  # across parts, in any order
    assert take_rows(urls, "text", rows) == [whole["text"][r].as_py() for r in rows]


def test_cluster_sizes_cover_the_dedup_input(run):
    path, info = run
    sec = _sections(path)["dedup-clusters"]
    dedup = next(s for s in info["stats"] if s.stage == "near_dedup")
    assert sum(r[2] for r in sec.rows) == dedup.docs_in
    # every removed near-duplicate sits in a cluster of 2+, one survivor per cluster
    multi = sum(r[1] for r in sec.rows if r[0] > 1)
    assert sum(r[2] for r in sec.rows if r[0] > 1) - multi == dedup.removed["near_duplicate"]


def test_mixture_and_tokenizer_sections(run):
    path, info = run
    sec = _sections(path)
    mixed_keys = [r[0] for r in sec["mixture"].rows]
    assert mixed_keys == [r["key"] for r in info["mixture"]["rows"]]
    tok = sec["tokenizer"]
    assert "vocabulary 1,000" in tok.summary
    bpt = {r[0]: r[3] for r in tok.rows}
    assert set(bpt) == {"code", "fortune", "meta", "prose", "rst"}
    assert all(1.0 < v < 8.0 for v in bpt.values()), bpt
    md = report_markdown(str(path))
    assert md.count("data:image/png;base64,") == len(sec)
    assert "| stage | docs in | kept |" in md


def test_partial_runs_and_training_section(run, tmp_path):
    path, _ = run
    # a run that stopped after two stages: no stats.json, no shards, no mixture
    partial = tmp_path / "partial"
    for stage in ("toxicity", "pii"):
        shutil.copytree(path / stage, partial / stage)
    for name in ("config.json", "parts.json"):  # written when the run starts
        shutil.copy(path / name, partial / name)
    sec = _sections(partial)
    assert set(sec) == {"funnel", "removed-by-reason", "lang-histogram", "domain-histogram"}
    assert [r[0] for r in sec["funnel"].rows] == ["toxicity", "pii"]
    assert "No stage output" in Path(write_report_html(str(tmp_path / "empty"))).read_text()
    # training output next to the run (train/ and scaling formats): plotted with the prediction
    train = partial / "train"
    train.mkdir()
    rows = [
        {
            "step": s,
            "tokens": s * 4096,
            "train_loss": 9.0 / (1 + s) ** 0.3,
            "val_loss": 9.2 / (1 + s) ** 0.3 if s % 10 == 0 else float("nan"),
        }
        for s in range(0, 50, 5)
    ]
    (train / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 50, "tok'  # torn last line
    )
    curve = [
        {"tokens": t, "loss": 9.0 / (1 + t / 4096) ** 0.3, "lo": 3.0, "hi": 9.5}
        for t in (4096, 40960, 200704)
    ]
    (train / "prediction.json").write_text(
        json.dumps(
            {"loss": 2.99, "lo": 2.9, "hi": 3.1, "tokens": 200704, "n_params": 1000, "curve": curve}
        )
    )
    (train / "final.json").write_text(json.dumps({"final_val_loss": 3.05, "tokens": 200704}))
    from train.report import training_section

    loss = training_section(train)  # train/ draws it; the flows pass it to the HTML report
    assert loss is not None and loss.key == "loss-vs-prediction"
    page = Path(write_report_html(str(partial), [loss])).read_text()
    assert '<section id="loss-vs-prediction">' in page
    assert loss.png
    by_what = {(r[0], r[1]): r[2:] for r in loss.rows}
    assert by_what[("train_loss", "last measured")] == [45 * 4096, round(9.0 / 46**0.3, 4)]
    assert by_what[("val_loss", "last measured")] == [40 * 4096, round(9.2 / 41**0.3, 4)]
    assert by_what[("prediction", "predicted final loss [2.9, 3.1]")] == [200704, 2.99]
    assert by_what[("train", "final val loss")] == [200704, 3.05]


def test_inspect_samples_every_reason(run):
    path, info = run
    text = inspect_run(str(path), per_reason=2, seed=0)
    assert "== toxicity" in text and "== pii" in text and "== near_dedup" in text
    dedup = next(s for s in info["stats"] if s.stage == "near_dedup")
    assert f"-- removed: near_duplicate ({dedup.removed['near_duplicate']:,} docs)" in text
    assert "-- removed: toxic:" in text
    blocks = re.split(r"^-- ", text, flags=re.M)
    for block in blocks[1:]:
        assert 1 <= len(re.findall(r"^  - [0-9a-f]{16}  ", block, flags=re.M)) <= 2, block[:200]
    # the PII stage shows redacted text; the same seed gives the same sample, another seed not
    assert inspect_run(str(path), per_reason=2, seed=0) == text
    other = inspect_run(str(path), per_reason=2, seed=1, stage="near_dedup")
    assert other.startswith("== near_dedup") and "== pii" not in other
    assert other != inspect_run(str(path), per_reason=2, seed=0, stage="near_dedup")
    with pytest.raises(ValueError, match="no stage 'nope'"):
        inspect_run(str(path), stage="nope")


def test_inspect_shows_removed_scores_and_reasons(run):
    path, _ = run
    text = inspect_run(str(path), per_reason=50, stage="toxicity")
    removed = text.split("-- removed: ", 1)[1]
    assert re.search(r"toxicity_hits=[2-9]", removed)  # min_hits=2 is the rule
    # sampled ids really are in the removed files with that reason
    ids = re.findall(r"^  - ([0-9a-f]{16})  ", removed, flags=re.M)
    table = pa.concat_tables(pq.read_table(u) for u in part_files(str(path), "toxicity", "removed"))
    assert set(ids) == set(table.column("id").to_pylist())


def test_report_and_inspect_on_a_runner_run(tmp_path):
    """The layout the curation runner writes (stats.json keyed by stage, config.json order)."""
    from curate.config import load_config
    from curate.runner import run_pipeline

    sample = Path(__file__).resolve().parent.parent / "data" / "sample"
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(
        f"""name: tiny
run_dir: {tmp_path}/runs/tiny
inputs:
  - {{path: {sample}/code, format: code, domain: code}}
  - {{path: {sample}/fortune/fortunes-it-off, format: fortune, domain: fortune}}
  - {{path: {sample}/meta, format: text, domain: meta}}
parts: {{files_per_part: 40, bytes_per_part: 3000000}}
stages:
  - {{name: toxicity, options: {{fallback_langs: ["*"]}}}}  # no langid: every list judges
  - {{name: pii, options: {{}}}}
mix: {{weights: {{code: 1, fortune: 1, meta: 1}}, total_tokens: 200000, max_epochs: 3}}
tokenizer: {{vocab_size: 600, sample_bytes: 200000, num_threads: 1}}
shards: {{seq_len: 128, sequences_per_file: 4096, val_fraction: 0.05}}
"""
    )
    cfg = load_config(cfg_path)
    run_pipeline(cfg)
    run = cfg.run_url
    stats = json.loads(Path(run, "stats.json").read_text())["stages"]
    assert [s.stage for s in load_stats(run)] == ["extract", "toxicity", "pii"]
    sec = _sections(Path(run))
    assert {
        "funnel",
        "removed-by-reason",
        "lang-histogram",
        "domain-histogram",
        "mixture",
        "tokenizer",
    } <= set(sec)
    assert [r[2] for r in sec["funnel"].rows] == [
        stats[s]["kept"] for s in ("extract", "toxicity", "pii")
    ]
    assert all(r[8] > 0 for r in sec["funnel"].rows)  # seconds from timings.json
    toxic = {r[2]: r[3] for r in sec["removed-by-reason"].rows if r[0] == "toxicity"}
    assert toxic == stats["toxicity"]["removed"] and sum(toxic.values()) > 0
    assert {r[0] for r in sec["domain-histogram"].rows} == {"code", "fortune", "meta"}
    page = Path(write_report_html(run)).read_text()
    assert '<section id="mixture">' in page and '<section id="tokenizer">' in page
    text = inspect_run(run, per_reason=1)
    assert text.index("== extract") < text.index("== toxicity") < text.index("== pii")
    assert "-- removed: toxic:" in text


def _bar_extents(png: bytes, color: tuple[int, int, int], axis: int) -> list[int]:
    """Lengths (pixels) of the runs of ``color`` along ``axis`` (0: rows, 1: columns) of a
    chart, one per bar, in drawing order."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    mask = np.all(pixels == color, axis=2)
    counts = mask.sum(axis=1 - axis)  # per row (axis 0) or per column (axis 1)
    runs, current = [], 0
    for n in [*counts.tolist(), 0]:
        if n:
            current = max(current, n)
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_bar_charts_draw_values_to_scale():
    """``curate.plots``: horizontal bars as long as their values (linear axis from 0, the
    first label on top); vertical bars on a log axis as tall as their logs above the floor; the
    same chart is the same bytes; drawing them never imports matplotlib."""
    import math

    from curate.plots import LOG_FLOOR, hbar_png, nice_ticks, vbar_png

    green, red = (0x55, 0xA8, 0x68), (0xC4, 0x4E, 0x52)
    png = hbar_png(["first", "second", "third"], [40, 10, 30], "t", "documents")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == hbar_png(
        ["first", "second", "third"], [40, 10, 30], "t", "documents"
    )
    first, second, third = _bar_extents(png, green, axis=0)
    assert abs(second - first / 4) <= 2 and abs(third - first * 3 / 4) <= 2  # pixels
    assert nice_ticks(40) == [0, 10, 20, 30, 40] and nice_ticks(0.37)[-1] >= 0.37

    png = vbar_png(["1", "2", "3"], {"n": [1000, 10, 1]}, "t", "clusters", log=True, colors=[
        "#c44e52"
    ])  # fmt: skip
    tall, mid, short = _bar_extents(png, red, axis=1)
    floor = math.log10(1 / LOG_FLOOR)
    assert abs(short - tall * floor / (3 + floor)) <= 2  # pixels
    assert abs(mid - tall * (1 + floor) / (3 + floor)) <= 2

    drawn = (
        "from collections import Counter\n"
        "from curate.html_report import cluster_sizes_png, funnel_png\n"
        "from curate.mix import mixture_png\n"
        "cluster_sizes_png(Counter({1: 50, 2: 3}))\n"
        "mixture_png({'rows': [{'key': 'web', 'target_weight': 1, 'achieved_weight': 1}],"
        " 'achieved_tokens': 10})"
    )
    assert modules_imported(drawn, ["matplotlib"]) == []
