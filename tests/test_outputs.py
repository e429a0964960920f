"""A run's outputs open with the libraries people already use (issue 20), as README documents:
the kept documents with one ``load_dataset('parquet', ...)`` line (0-row parts included), the
shards as Arrow streaming files (``datasets.Dataset.from_file``, ``pyarrow.ipc.open_stream``)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import runner
from curate.layout import RunLayout
from tests.golden import golden_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs")
    cfg = golden_config(tmp)
    runner.run_pipeline(cfg)
    return RunLayout(cfg.run_url), tmp


def test_kept_documents_load_with_one_load_dataset_line(run):
    from datasets import load_dataset

    layout, tmp = run
    last = layout.document_stages()[-1]
    parts = layout.part_files(last)
    rows = [pq.read_metadata(p).num_rows for p in parts]
    assert 0 in rows  # the job has parts that end empty: the case that used to fail
    ds = load_dataset(  # README: "Reading the outputs"
        "parquet",
        data_files=f"{layout.root}/{last}/part-?????.parquet",
        split="train",
        cache_dir=str(tmp / "hf"),
    )
    stats = json.loads((tmp / "runs" / "golden" / "stats.json").read_text())
    assert ds.num_rows == sum(rows) == stats["stages"][last]["kept"] > 0
    assert "text" in ds.column_names and "removed_by" not in ds.column_names


def test_shards_are_arrow_streams_both_readers_agree(run):
    import datasets

    layout, _ = run
    manifest = json.loads(Path(layout.shards_dir, "manifest.json").read_text())
    split = manifest["splits"]["train"]
    shard = f"{layout.shards_dir}/{split['files'][0]['path']}"
    with pa.OSFile(shard) as f:  # README: pyarrow.ipc.open_stream
        table = pa.ipc.open_stream(f).read_all()
    ds = datasets.Dataset.from_file(shard)  # README: datasets.Dataset.from_file
    assert ds.num_rows == table.num_rows > 0
    assert ds[0]["input_ids"] == table.column("input_ids")[0].as_py()


def test_the_tokenizer_exported_as_tokenizer_json_encodes_the_same(run, capsys):
    import sentencepiece as spm
    from transformers import PreTrainedTokenizerFast

    from flows.cli import main

    layout, _ = run
    assert main(["export-tokenizer", layout.root]) == 0
    path = capsys.readouterr().out.strip()
    assert path == f"{layout.root}/tokenizer/tokenizer.json"
    hf = PreTrainedTokenizerFast(tokenizer_file=path)
    sp = spm.SentencePieceProcessor(model_file=layout.tokenizer_model)
    texts = [
        t
        for stage in ("mix", "extract")
        for p in layout.part_files(stage)
        for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()
    ]
    texts = texts[:400]  # real documents: the mixed ones first, then extracted ones
    assert len(texts) > 100
    texts += ["héllo  wörld\n\n\t 12345 ünïcödé 😀 漢字", "  two leading spaces", "x\u00a0y", ""]
    for text in texts:
        assert hf.encode(text, add_special_tokens=False) == sp.encode(text), text[:200]
    assert hf.decode(sp.encode(texts[0])) == texts[0]


def test_a_jsonl_inputs_own_fields_reach_the_kept_parts(tmp_path):
    """Real reST documents as JSONL records with their own ``id`` and ``url``: every kept
    document of the last stage carries them in its ``meta`` column (JSON)."""
    from curate.config import PipelineConfig
    from tests.golden import REPO_ROOT

    files = sorted((REPO_ROOT / "data/sample/rst/llvm-16-doc").rglob("*.txt"))[:30]
    records = [
        {"text": f.read_text(), "id": f"doc-{k}", "url": f"https://llvm.org/docs/{f.name}"}
        for k, f in enumerate(files)
    ]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = golden_config(tmp_path, "jsonl").model_dump(mode="json")
    data["inputs"] = [{"path": str(tmp_path / "in"), "format": "jsonl", "domain": "rst"}]
    data["stages"] = [s for s in data["stages"] if s["name"] in ("langid", "exact_dedup")]
    data["mix"]["weights"] = {"rst": 1}
    cfg = PipelineConfig.model_validate(data)
    stats = runner.run_pipeline(cfg)
    layout = RunLayout(cfg.run_url)
    kept = pa.concat_tables(pq.read_table(p) for p in layout.part_files("exact_dedup"))
    assert kept.num_rows == stats["stages"]["exact_dedup"]["kept"] > 10
    by_id = {r["id"]: r for r in records}
    for meta, text in zip(kept["meta"].to_pylist(), kept["text"].to_pylist(), strict=True):
        fields = json.loads(meta)
        assert set(fields) == {"id", "url"}  # the text is the document, not metadata
        assert by_id[fields["id"]]["url"] == fields["url"] and by_id[fields["id"]]["text"] == text
