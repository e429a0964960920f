"""Do the default stages hold on clean documentation nobody tuned them to? (issue 15)

Runs ``configs/default.yaml``'s stages and options, in process (``curate.runner.run_pipeline``),
on the evaluation corpus of ``bench/evalcorpus.py`` (Debian documentation in 12 languages, HTML
+ PDF + txt, none of it in ``data/sample``), with only the inputs (and the mix weights, which
name
domains) changed; then prints per language (the corpus's label rule: language from the path):
documents extracted, removed by langid / heuristics (per rule) / quality / toxicity, the share
of documents those four removed, and the e-mail addresses left (a ``local@domain.`` pattern, so
an address broken by a line wrap counts too) in the texts after the last stage and in the
decoded token shards. Removed pages that were read and judged boilerplate
(:data:`JUDGED_BOILERPLATE`: licence/version front pages) are counted apart ("judged
boilerplate") and left out of "clean removed %"; every other removal is listed.

    PYTHONPATH=. python -m bench.generalise --corpus ~/.cache/sluice/evalcorpus --run /tmp/gen

Goal: ≤ 5 % of the clean documents removed by the four filter stages in every language, no
toxicity removal, no e-mail address in the shards.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from bench.evalcorpus import label_of

ROOT = Path(__file__).resolve().parents[1]
FILTER_STAGES = ("langid", "heuristics", "quality", "toxicity")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.")
INPUTS = [
    {"kind": "html", "format": "html", "domain": "web"},
    {"kind": "pdf", "format": "pdf", "domain": "pdf"},
    {"kind": "txt", "format": "text", "domain": "prose"},
]

# Removed pages read one by one and judged boilerplate, so removing them is right: the front
# pages (index.*.html) of three packages are a licence notice and a version/copyright list
# (debian-faq: three "Permission is granted to ..." paragraphs; maint-guide: "Version 1.2.53,
# Copyright © ... Josip Rodin ..., GPL 2"; debian-handbook ar: title, ISBNs, copyright years,
# licence notices). They are reported apart and not counted as clean documents.
JUDGED_BOILERPLATE = {
    f"html/{lang}/{pkg}/index.{suffix}html": "front page: licence notice / version, copyrights"
    for lang, pkg, suffix in [
        ("ar", "debian-handbook", ""),
        ("de", "debian-faq-de", "de."),
        ("en", "debian-faq", "en."),
        ("fr", "debian-faq-fr", "fr."),
        ("it", "debian-faq-it", "it."),
        ("ja", "debian-faq-ja", "ja."),
        ("ru", "debian-faq-ru", "ru."),
        ("ca", "maint-guide-ca", "ca."),
        ("es", "maint-guide-es", "es."),
        ("ja", "maint-guide-ja", "ja."),
        ("ru", "maint-guide-ru", "ru."),
        ("zh", "maint-guide-zh-cn", "zh-cn."),
    ]
}


def _corpus_path(source: str) -> str:
    """``html/<lang>/...`` of a source path (or the path itself)."""
    match = re.search(r"/((?:html|pdf|txt)/.*)$", source)
    return match.group(1) if match else source


def judged_boilerplate(source: str) -> bool:
    """Whether ``source`` is one of :data:`JUDGED_BOILERPLATE` (path relative to the corpus)."""
    return any(source.endswith("/" + path) for path in JUDGED_BOILERPLATE)


def write_config(corpus: Path, run: Path, quality_model: str | None = None) -> Path:
    """configs/default.yaml with the evaluation corpus as inputs, written next to the run folder
    (``quality_model``: the quality stage's ``model_path`` instead of the config's)."""
    cfg = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    if quality_model:
        for stage in cfg["stages"]:
            if stage["name"] == "quality":
                stage["options"].pop("train", None)
                stage["options"]["model_path"] = quality_model
    cfg["name"] = "generalise"
    cfg["run_dir"] = str(run)
    cfg["inputs"] = [
        {"path": str(corpus / i["kind"]), "format": i["format"], "domain": i["domain"]}
        for i in INPUTS
    ]
    cfg["mix"]["weights"] = {i["domain"]: 1 for i in INPUTS}
    cfg["mix"]["total_tokens"] = 100_000_000  # everything kept goes into the shards
    cfg["mix"]["max_epochs"] = 1
    run.mkdir(parents=True, exist_ok=True)
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _rows(run: Path, stage: str, kind: str, columns: list[str]) -> list[dict]:
    suffix = f".{kind}.parquet" if kind else ".parquet"
    out: list[dict] = []
    for p in sorted((run / stage).glob(f"part-*{suffix}")):
        if not kind and p.name.count(".") > 1:
            continue
        table = pq.read_table(p)
        out += table.select([c for c in columns if c in table.column_names]).to_pylist()
    return out


def shard_texts(run: Path) -> list[str]:
    """Every sequence of the run's shards, decoded with its tokenizer."""
    import sentencepiece as spm

    from curate.shards.format import load_manifest, open_shard

    shards = run / "shards"
    manifest = load_manifest(shards)
    tok_path = Path(manifest.tokenizer.path)
    sp = spm.SentencePieceProcessor(
        model_file=str(tok_path if tok_path.is_absolute() else shards / tok_path)
    )
    texts: list[str] = []
    for split in manifest.splits.values():
        for f in split.files:
            for ids in open_shard(shards / f.path)["input_ids"].to_pylist():
                texts.append(sp.decode(ids))
    return texts


def report(run: Path, stages: list[str]) -> str:
    """The per-language table (markdown)."""
    docs: Counter[str] = Counter()
    for r in _rows(run, "extract", "", ["source"]):
        docs[label_of(r["source"]) or "?"] += 1
    removed: dict[str, Counter[str]] = defaultdict(Counter)  # lang -> stage or stage:rule
    judged: Counter[str] = Counter()  # lang -> removed pages judged boilerplate by reading
    still_removed: list[tuple[str, str, str]] = []  # (lang, reason, source) of clean pages
    for stage in FILTER_STAGES:
        for r in _rows(run, stage, "removed", ["source", "reason"]):
            lang = label_of(r["source"]) or "?"
            removed[lang][stage] += 1
            if judged_boilerplate(r["source"]):
                judged[lang] += 1
            else:
                still_removed.append((lang, r["reason"], _corpus_path(r["source"])))
            if stage == "heuristics":
                removed[lang][f"heuristics:{r['reason']}"] += 1
    emails_final: Counter[str] = Counter()
    for r in _rows(run, stages[-1], "", ["source", "text"]):
        emails_final[label_of(r["source"]) or "?"] += len(EMAIL.findall(r["text"]))
    shard_emails = sum(len(EMAIL.findall(t)) for t in shard_texts(run))
    lines = [
        "| lang | docs | langid | heuristics | quality | toxicity | removed % | judged "
        "boilerplate | clean removed % | heuristic rules | e-mails after last stage |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for lang in sorted(docs):
        rm = removed[lang]
        total = sum(rm[s] for s in FILTER_STAGES)
        rules = ", ".join(
            f"{k.split(':', 1)[1]} {v}"
            for k, v in sorted(rm.items())
            if k.startswith("heuristics:")
        )
        lines.append(
            f"| {lang} | {docs[lang]} | {rm['langid']} | {rm['heuristics']} | {rm['quality']} | "
            f"{rm['toxicity']} | {100 * total / docs[lang]:.1f} | {judged[lang]} | "
            f"{100 * (total - judged[lang]) / max(docs[lang] - judged[lang], 1):.1f} | {rules} | "
            f"{emails_final[lang]} |"
        )
    all_docs = sum(docs.values())
    all_removed = sum(removed[lang][s] for lang in removed for s in FILTER_STAGES)
    lines.append(
        f"\nall: {all_docs} documents, {all_removed} removed by the filter stages "
        f"({100 * all_removed / max(all_docs, 1):.1f} %); e-mail addresses in the decoded "
        f"shards: {shard_emails}; judged boilerplate by reading: {sum(judged.values())} "
        f"({', '.join(sorted(JUDGED_BOILERPLATE))})"
    )
    lines.append("\nclean documents removed (lang, reason, source):")
    lines += [f"- {lang} {reason} {source}" for lang, reason, source in sorted(still_removed)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path.home() / ".cache/sluice/evalcorpus")
    parser.add_argument("--run", type=Path, default=Path("/tmp/sluice-generalise"))
    parser.add_argument("--keep", action="store_true", help="reuse an earlier run's outputs")
    parser.add_argument("--quality-model", help="quality model_path instead of the config's")
    args = parser.parse_args(argv)
    if not args.corpus.exists():
        subprocess.run(
            ["python", "-m", "bench.evalcorpus", "--out", str(args.corpus)], check=True, cwd=ROOT
        )
    if args.run.exists() and not args.keep:
        shutil.rmtree(args.run)
    from curate import runner
    from curate.config import load_config

    cfg = load_config(write_config(args.corpus.resolve(), args.run.resolve(), args.quality_model))
    runner.run_pipeline(cfg)
    print(report(args.run, runner.stage_names(cfg)))


if __name__ == "__main__":
    main()
