"""``sluice ablate`` on real documents (data/sample: two LLVM manuals and code) with a tiny model:
variants share every step upstream of the one they differ in, the evaluation set is held out of
every variant's training shards (by document id), and the report's intervals come from the
per-seed losses it records (one seed: no interval)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from scipy import stats

from curate.ablation import (
    COMPUTED,
    SHARED,
    check_disjoint,
    load_ablation,
    piece_bytes,
    training_doc_ids,
    variant_config,
)
from curate.layout import AblationLayout
from curate.plan import build_plan
from curate.tokenizer import load_tokenizer
from flows.ablate import run_local
from flows.cli import main
from train.ablation import bits_per_byte, paired_difference, seeds_to_resolve, t_interval

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"

BASE = {
    "name": "t",
    "inputs": [
        {"path": str(SAMPLE / "rst" / "llvm-15-doc"), "format": "text", "domain": "rst"},
        {"path": str(SAMPLE / "rst" / "llvm-16-doc"), "format": "text", "domain": "rst"},
        {"path": str(SAMPLE / "code"), "format": "code", "domain": "code"},
    ],
    "stages": [
        {"name": "heuristics", "options": {"skip_domains": ["code"]}},
        {"name": "exact_dedup", "options": {}},
        {"name": "near_dedup", "options": {}},
    ],
    "mix": {"weights": {"rst": 1, "code": 1}, "total_tokens": 400000},
    "tokenizer": {"vocab_size": 512, "sample_bytes": 1000000, "character_coverage": 0.995},
    "shards": {"seq_len": 64, "sequences_per_file": 512},
}
TRAIN = {
    "model": {"n_layer": 1, "n_head": 2, "n_kv_head": 2, "d_model": 32, "tie_embeddings": True},
    "micro_batch_size": 8,
    "lr": 3.0e-3,
    "warmup_steps": 2,
    "log_every": 10,
    "device": "cpu",
    "tensorboard": False,
    "threads": 1,
}
# the variant differs from the baseline in one stage: heuristics also skips the manuals (the
# baseline's heuristics remove most of them)
CHANGED = "heuristics"


def _write_ablation(tmp: Path, seeds: list[int], root: Path) -> Path:
    (tmp / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp / "train.yaml").write_text(yaml.safe_dump(TRAIN))
    abl = {
        "name": "t",
        "run_dir": str(root),
        "base": "base.yaml",
        "variants": [
            {"name": "base"},
            {"name": "loose", "set": ["stages[0].options.skip_domains=[code, rst]"]},
        ],
        "train": "train.yaml",
        "tokens": 12800,
        "seeds": seeds,
        "eval": {"holdout_fraction": 0.1, "max_bytes": 200000},
    }
    path = tmp / f"ablation-{len(seeds)}.yaml"
    path.write_text(yaml.safe_dump(abl))
    return path


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    path = _write_ablation(tmp, [0, 1, 2], tmp / "run")
    abl = load_ablation(path)
    return tmp, abl, run_local(abl)


def _downstream(steps, changed: str) -> set[str]:
    """The steps of the changed stage and every step that reads (transitively) from them."""
    out = {s.name for s in steps if s.name == changed or s.name.startswith(changed + ".")}
    for s in steps:
        if set(s.inputs) & out:
            out.add(s.name)
    return out


@pytest.mark.timeout(600)
def test_variants_recompute_only_the_stage_that_differs_and_what_follows(ablation):
    _, abl, report = ablation
    union = report["union_ledger"]
    assert union["extract"][COMPUTED] == 1  # the union run extracts, the variants share it
    base, loose = (report["variants"][v]["steps_ledger"] for v in ("base", "loose"))
    assert base["extract"] == {COMPUTED: 0, SHARED: 1, "done": 0}
    assert base["holdout"][SHARED] == 1
    steps = build_plan(variant_config(abl, abl.variants[1], "tok")).steps
    expected = _downstream(steps, CHANGED) - {"tokenizer"}  # the given tokenizer reads nothing
    assert "tokenizer" not in _downstream(steps, CHANGED)
    computed = {name for name, c in loose.items() if c[COMPUTED]}
    shared = {name for name, c in loose.items() if c[SHARED] and not c[COMPUTED]}
    assert computed == expected, (computed, expected)
    assert shared == {s.name for s in steps} - expected
    assert shared == {"extract", "holdout", "tokenizer"}
    # the change changed the data (else what follows would be shared too)
    kept = {v: report["variants"][v]["docs_kept"] for v in ("base", "loose")}
    assert kept["loose"] > kept["base"], kept


@pytest.mark.timeout(600)
def test_eval_set_is_disjoint_from_every_variants_training_shards(ablation):
    _, abl, report = ablation
    lay = AblationLayout(abl.root)
    eval_ids = set(pq.read_table(lay.eval_docs, columns=["id"]).column("id").to_pylist())
    assert eval_ids and report["eval"]["disjoint"]
    assert report["eval"]["documents"] == len(eval_ids)
    for v in abl.variants:
        train_ids = training_doc_ids(lay.train_data(v.name))
        assert train_ids and not (train_ids & eval_ids)
        # the held-out documents are the holdout stage's removals in every variant
        removed = pq.read_table(
            f"{lay.variant(v.name)}/holdout/part-00000.removed.parquet", columns=["id"]
        )
        assert eval_ids <= set(removed.column("id").to_pylist())
    # the val split every run evaluates on is the common set, token for token
    manifests = [json.loads(Path(lay.train_data(v.name), "manifest.json").read_text())
                 for v in abl.variants]  # fmt: skip
    assert manifests[0]["splits"]["val"] == manifests[1]["splits"]["val"]
    # the check fails when a training document is in the evaluation set
    some_train_id = next(iter(training_doc_ids(lay.train_data("base"))))
    with pytest.raises(ValueError, match="not held out"):
        check_disjoint([some_train_id], {"base": lay.train_data("base")})


@pytest.mark.timeout(600)
def test_report_intervals_come_from_the_seeds_run(ablation):
    _, abl, report = ablation
    lay = AblationLayout(abl.root)
    saved = json.loads(Path(lay.report_json).read_text())
    c = saved["confidence"]
    for name in ("base", "loose"):
        v = saved["variants"][name]
        assert v["seeds"] == [0, 1, 2]
        losses = [v["loss_per_seed"][str(s)] for s in v["seeds"]]
        # every per-seed loss is the final val loss its training run wrote
        for s, x in zip(v["seeds"], losses, strict=True):
            final = json.loads(Path(lay.train_run(name, s), "final.json").read_text())
            assert final["final_val_loss"] == x
        mean, sd = np.mean(losses), np.std(losses, ddof=1)
        half = stats.t.ppf((1 + c) / 2, 2) * sd / math.sqrt(3)
        assert v["loss"]["lo"] == pytest.approx(mean - half)
        assert v["loss"]["hi"] == pytest.approx(mean + half)
        e = saved["eval"]
        assert v["bpb"]["mean"] == pytest.approx(
            mean * e["target_tokens"] / (math.log(2) * e["target_bytes"])
        )
    d = saved["variants"]["loose"]["vs_baseline"]["loss"]
    base = saved["variants"]["base"]["loss_per_seed"]
    loose = saved["variants"]["loose"]["loss_per_seed"]
    diffs = [loose[str(s)] - base[str(s)] for s in (0, 1, 2)]
    half = stats.t.ppf((1 + c) / 2, 2) * np.std(diffs, ddof=1) / math.sqrt(3)
    assert d["lo"] == pytest.approx(np.mean(diffs) - half)
    assert d["distinguishable"] == (d["lo"] > 0 or d["hi"] < 0)
    assert "| loose |" in Path(lay.report_md).read_text()


@pytest.mark.timeout(600)
def test_one_seed_reports_no_interval_and_a_rerun_recomputes_nothing(ablation, capsys):
    tmp, abl, _ = ablation
    one = load_ablation(_write_ablation(tmp, [1], Path(abl.root)))
    report = run_local(one)
    for v in report["variants"].values():
        assert v["seeds"] == [1]
        assert v["loss"]["lo"] is None and v["bpb"]["hi"] is None
        # nothing was curated again: every call's own marker matched
        assert all(c[COMPUTED] == 0 and c[SHARED] == 0 for c in v["steps_ledger"].values())
    assert report["variants"]["loose"]["vs_baseline"]["loss"]["distinguishable"] is None
    assert "no interval: 1 seed" in report["markdown"]
    assert "seed 1: trained already" in capsys.readouterr().out


def test_bits_per_byte_counts_the_bytes_the_tokens_stand_for(ablation):
    _, abl, report = ablation
    tokenizer = report["tokenizer"]
    table, sp = piece_bytes(tokenizer), load_tokenizer(tokenizer)
    docs = pq.read_table(AblationLayout(abl.root).eval_docs)
    for text in docs.column("text").to_pylist()[:3] + ["naïve café\n\tx = 1  # 日本"]:
        assert int(table[sp.encode(text)].sum()) == len(text.encode())
    assert report["eval"]["target_bytes"] <= int(
        pc.sum(pc.binary_length(docs.column("text"))).as_py()
    )
    assert bits_per_byte(math.log(2), 10, 10) == pytest.approx(1.0)


def test_statistics():
    assert t_interval([1.0])["lo"] is None
    x = t_interval([1.0, 2.0, 3.0], 0.95)
    assert x["lo"] == pytest.approx(2 - stats.t.ppf(0.975, 2) * 1 / math.sqrt(3))
    d = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.4, 2: 3.6, 3: 9.0})
    assert d["seeds"] == [0, 1, 2] and d["distinguishable"] is True
    n = seeds_to_resolve(0.01, 5.0, 0.005)  # sd 0.01 at loss 5: 0.025 resolution
    assert stats.t.ppf(0.975, n - 1) * 0.01 / math.sqrt(n) <= 0.025
    assert stats.t.ppf(0.975, n - 2) * 0.01 / math.sqrt(n - 1) > 0.025 or n == 2


def test_cli_usage_errors(tmp_path, capsys):
    assert _exit(["ablate", "--config", str(ROOT / "configs/default.yaml"), "--local"]) == 2
    assert "--vs" in capsys.readouterr().err
    assert _exit(["ablate", "--local"]) == 2


def _exit(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return int(e.value.code)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_prefect_flow_reports_with_an_artifact(ablation):
    """The flow runs the same steps: one variant's run directory removed, its curation runs as
    a ``curate`` subflow on Ray, copying the calls it shares with the others (the union and the
    baseline are done: no Ray for them) and computing the rest, as in-process."""
    import shutil

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.testing.utilities import prefect_test_harness

    from curate.layout import AblationLayout
    from flows.ablate import ablate

    _, abl, local = ablation
    shutil.rmtree(AblationLayout(abl.root).variant("loose"))
    with prefect_test_harness(server_startup_timeout=120):
        report = ablate(abl)
        with get_client(sync_client=True) as client:
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sluice-ablation-t"]))
            )
            names = {r.name for r in client.read_flow_runs()}
    assert {"t", "t.loose"} <= names, names  # flow runs named after the ablation and its runs
    assert found and "| loose |" in found[0].data
    for name, v in report["variants"].items():
        assert v["loss_per_seed"] == local["variants"][name]["loss_per_seed"]
    loose, before = report["variants"]["loose"]["steps_ledger"], local["variants"]["loose"]
    assert {n for n, c in loose.items() if c[COMPUTED]} == {
        n for n, c in before["steps_ledger"].items() if c[COMPUTED]
    }
    assert {n for n, c in loose.items() if c[SHARED]} == {"extract", "holdout", "tokenizer"}
    assert all(c["done"] == sum(c.values()) for c in report["union_ledger"].values())


def test_clean_like_keeps_what_a_variants_document_stages_keep(ablation):
    """``eval.clean_like``: the held-out documents a variant's per-document stages keep (the
    dedup stages judge against the run and are skipped)."""
    from curate.ablation import eval_documents
    from curate.stages import STAGES

    _, abl, _ = ablation
    cfgs = {v.name: variant_config(abl, v, "tok") for v in abl.variants}
    raw, info = eval_documents(abl.model_copy(update={"eval": abl.eval.model_copy(
        update={"max_bytes": None})}), cfgs)  # fmt: skip
    assert not info.get("cleaned_by") and info["held_out"] == raw.num_rows
    clean_abl = abl.model_copy(
        update={"eval": abl.eval.model_copy(update={"max_bytes": None, "clean_like": "base"})}
    )
    clean, info = eval_documents(clean_abl, cfgs)
    assert info["cleaned_by"] == ["heuristics"]
    holdout = pq.read_table(f"{cfgs['base'].run_url}/holdout/part-00000.removed.parquet")
    holdout = holdout.drop_columns(["removed_by", "reason", "holdout_u"])
    expected = STAGES["heuristics"].run(holdout, cfgs["base"].stage_config(1)).kept
    assert sorted(clean.column("id").to_pylist()) == sorted(expected.column("id").to_pylist())
    assert clean.num_rows < raw.num_rows  # the sample's manuals fail the web heuristics


def test_cli_config_vs_makes_one_variant_per_config(ablation):
    from flows.cli import build_parser, load_ablation_args

    tmp, _, _ = ablation
    base = str(tmp / "base.yaml")
    args = build_parser().parse_args(
        ["ablate", "--config", base, "--vs", base, "--seeds", "3,4", "--tokens", "999",
         "--train-config", str(tmp / "train.yaml"), "--set", "mix.seed=1", "--local"]
    )  # fmt: skip
    abl = load_ablation_args(args)
    assert [v.name for v in abl.variants] == ["base", "base-2"]
    assert abl.baseline_name == "base" and abl.seeds == [3, 4] and abl.tokens == 999
    assert variant_config(abl, abl.variants[1], None).mix.seed == 1
