"""Sweep planning, a real mini sweep on real shards, the fit/held-out check and the run report."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from train.model import GPT
from train.report import predict_run, read_prediction, write_prediction, write_report
from train.scaling import NOT_IDENTIFIED, load_fit
from train.sweep import SweepConfig, collect_sweep, plan_sweep, shape_params, write_run_spec
from train.sweep_cli import main as sweep_main
from train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
TINY_SWEEP = ROOT / "configs" / "sweep" / "tiny.yaml"

MINI = {
    "base": str(ROOT / "configs" / "train" / "tiny.yaml"),
    "set": [
        "device=cpu",
        "tensorboard=false",
        "checkpoint_every=0",
        "eval_every=0",
        "eval_sequences=0",
        "log_every=2",
        "warmup_steps=2",
        "decay_frac=0.25",
    ],
    "schedule": "wsd",
    "models": [
        {"name": "s", "n_layer": 1, "n_head": 2, "n_kv_head": 2, "d_model": 32},
        {"name": "m", "n_layer": 2, "n_head": 2, "n_kv_head": 2, "d_model": 48},
        {"name": "l", "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 64},
    ],
    "tokens": [4096, 8192],
    "holdout": {
        "model": {"name": "xl", "n_layer": 3, "n_head": 4, "n_kv_head": 2, "d_model": 96},
        "tokens": 20480,
    },
    "fit_bootstrap": 20,
}


def test_plan_wsd_and_cosine():
    cfg = SweepConfig.from_yaml(TINY_SWEEP)
    specs = plan_sweep(cfg, seq_len=64, vocab_size=512)
    per_step = 16 * 64  # micro_batch_size set in configs/sweep/tiny.yaml × seq_len
    fit = [s for s in specs if s.role == "fit"]
    assert len(fit) == len(cfg.models)  # WSD: one run per model
    budgets = {m.name: m.tokens or cfg.tokens for m in cfg.models}
    for s in fit:
        assert s.tokens == [d // per_step * per_step for d in sorted(budgets[s.model])]
        assert s.steps * per_step == s.tokens[-1]
        assert [d * per_step for d in s.decay_at] == s.tokens[:-1]
    (hold,) = [s for s in specs if s.role == "holdout"]
    assert hold.steps == cfg.holdout.tokens // per_step
    cosine = plan_sweep(cfg.model_copy(update={"schedule": "cosine"}), seq_len=64, vocab_size=512)
    assert len(cosine) == sum(len(b) for b in budgets.values()) + 1
    assert len({s.name for s in cosine}) == len(cosine)
    assert all(not s.decay_at and "schedule=cosine" in s.overrides for s in cosine[:-1])
    with pytest.raises(ValueError, match="seq_len"):
        plan_sweep(cfg)
    with pytest.raises(ValueError, match="vocab_size"):
        plan_sweep(cfg, seq_len=64)  # per-size hparams need N, which counts the embedding


def test_size_scaling_follows_porian():
    cfg = SweepConfig.from_yaml(TINY_SWEEP)
    specs = {s.model: s for s in plan_sweep(cfg, seq_len=64, vocab_size=512)}

    def setting(model: str, key: str) -> float:
        (value,) = [o.split("=", 1)[1] for o in specs[model].overrides if o.startswith(key + "=")]
        return float(value)

    by_n = sorted(cfg.models, key=lambda m: shape_params(cfg, m, 512))
    lrs = [setting(m.name, "lr") for m in by_n]
    assert lrs == sorted(lrs, reverse=True)  # lr falls with N (seeds of one size: equal)
    assert len(set(lrs)) >= 6
    smallest_steps = min(min(m.tokens or cfg.tokens) for m in cfg.models) // (16 * 64)
    for m in cfg.models:
        n = shape_params(cfg, m, 512)
        assert setting(m.name, "warmup_steps") == min(round(n / 1024), 0.25 * smallest_steps)
        assert setting(m.name, "beta2") == 0.99


@pytest.mark.parametrize("name", ["tiny", "demo"])
def test_sweep_configs_span_the_law(name):
    """N over ≥ 30× with and without embeddings (tiny: ≥ 1.5 decades), D over ≥ 8× (tiny:
    ≥ 16×, and ≥ 4 budgets at ≥ 4 sizes, for β), ≥ 2 layers, counts as the model's; tiny's
    held-out run has ≥ 4× the compute of ≥ 4 model sizes' points."""
    cfg = SweepConfig.from_yaml(ROOT / "configs" / "sweep" / f"{name}.yaml")
    vocab = {"tiny": 512, "demo": 1024}[name]  # bench/scaling.py's shards; configs/default.yaml
    shapes = [*cfg.models, *([cfg.holdout.model] if cfg.holdout else [])]
    n, n_emb = {}, {}
    for shape in shapes:
        g = TrainConfig.from_yaml(cfg.base, cfg.set).model.model_copy(
            update={**shape.fields(), "vocab_size": vocab, "seq_len": 64}
        )
        assert g.n_layer >= 2
        n[shape.name] = shape_params(cfg, shape, vocab)
        assert n[shape.name] == GPT(g).num_params(non_embedding=False)
        n_emb[shape.name] = shape_params(cfg, shape, vocab, "non_embedding")
    fit_n = [n[m.name] for m in cfg.models]
    assert max(n_emb[m.name] for m in cfg.models) / min(n_emb[m.name] for m in cfg.models) >= 30
    assert max(fit_n) / min(fit_n) >= (10**1.5 if name == "tiny" else 30)
    tokens = [d for m in cfg.models for d in (m.tokens or cfg.tokens)]
    assert max(tokens) / min(tokens) >= (16 if name == "tiny" else 8)
    if name == "tiny":
        assert sum(len(m.tokens or cfg.tokens) >= 4 for m in cfg.models) >= 4
    if name == "demo":  # non-embedding parameters dominate every demo model
        assert all(n_emb[m.name] > n[m.name] - n_emb[m.name] for m in cfg.models)
    if cfg.holdout:
        c_hold = 6 * n[cfg.holdout.model.name] * cfg.holdout.tokens
        fitted = {m.name for m in cfg.models for d in (m.tokens or cfg.tokens)
                  if 4 * 6 * n[m.name] * d <= c_hold}  # fmt: skip
        assert len(fitted) >= 4


@pytest.fixture(scope="module")
def sweep(train_shards, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "mini.yaml").write_text(yaml.safe_dump(MINI))
    out = tmp / "out"
    rc = sweep_main(["--config", str(tmp / "mini.yaml"), "--shards", str(train_shards),
                     "--out", str(out)])  # fmt: skip
    assert rc == 0
    return {"out": out, "config": tmp / "mini.yaml", "shards": train_shards}


def test_sweep_table_has_every_point(sweep):
    table = collect_sweep(sweep["out"])
    rows = table.to_pylist()
    assert len(rows) == 3 * 2 + 1
    assert sum(r["role"] == "holdout" for r in rows) == 1
    for r in rows:
        final = json.loads(
            (sweep["out"] / "runs" / r["run"].split("@")[0] / "final.json").read_text()
        )
        assert r["n_params"] == final["params"]  # the default count: with embeddings
        assert r["params_non_embedding"] == final["non_embedding_params"]
        assert r["flops"] == pytest.approx(6 * r["n_params"] * r["tokens"])
        assert math.isfinite(r["val_loss"]) and 3.0 < r["val_loss"] < math.log(1024) + 0.5
    # more tokens, lower loss for every model (each point is an annealed WSD branch)
    for model in ("s", "m", "l"):
        losses = [
            r["val_loss"] for r in sorted(rows, key=lambda r: r["tokens"]) if r["model"] == model
        ]
        assert losses == sorted(losses, reverse=True)
    assert [r["flops"] for r in rows] == sorted(r["flops"] for r in rows)
    kaplan = collect_sweep(sweep["out"], "non_embedding").to_pylist()
    assert [r["n_params"] for r in kaplan] != [r["n_params"] for r in rows]
    assert all(r["n_params"] == r["params_non_embedding"] for r in kaplan)


def test_short_points_are_shown_not_fitted(sweep, tmp_path):
    """fit_min_steps: the fit points of shorter runs get role "short" (kept in the table, left out
    of the fit); held-out rows keep their role."""
    out = tmp_path / "out"
    shutil.copytree(sweep["out"], out)
    meta = json.loads((out / "sweep.json").read_text())
    before = collect_sweep(out).to_pylist()
    min_steps = max(r["steps"] for r in before if r["role"] == "fit")
    meta["config"]["fit_min_steps"] = min_steps
    (out / "sweep.json").write_text(json.dumps(meta))
    rows = collect_sweep(out).to_pylist()
    assert [r["run"] for r in rows] == [r["run"] for r in before]
    short = [r for r in rows if r["role"] == "short"]
    assert len(short) == 3 and all(r["steps"] < min_steps for r in short)
    assert all(r["steps"] >= min_steps for r in rows if r["role"] == "fit")
    assert sum(r["role"] == "holdout" for r in rows) == 1
    assert SweepConfig(**meta["config"]).fit_min_steps == min_steps


def test_sweep_fit_and_holdout_files(sweep):
    out = sweep["out"]
    fit = load_fit(out / "fit.json")
    assert fit.n_points == 6 and len(fit.bootstrap) == 20
    assert np.isfinite([fit.law.E, fit.law.A, fit.law.B, fit.law.alpha, fit.law.beta]).all()
    assert fit.param_count == "total"
    holdout = json.loads((out / "holdout.json").read_text())
    assert holdout["compute_ratio"] >= 4
    assert holdout["target"]["role"] == "holdout"
    assert (out / "sweep.png").stat().st_size > 10_000
    md = (out / "sweep.md").read_text()
    assert "Held-out" in md and "Compute-optimal" in md and "approach 2" in md
    if holdout["identified"]:
        assert holdout["rel_error"] == pytest.approx(
            abs(holdout["predicted"] - holdout["observed"]) / holdout["observed"]
        )
    else:  # 3 models over 2× in N: no number, the reason instead
        assert holdout["predicted"] is None and holdout["reasons"]
        assert NOT_IDENTIFIED in md.split("Held-out")[1]
    if not fit.identified:
        assert f"{NOT_IDENTIFIED} (" in md and "N^" not in md


def test_rerun_skips_finished_runs(sweep, capsys):
    finals = sorted(sweep["out"].glob("runs/*/final.json"))
    before = {p: p.stat().st_mtime_ns for p in finals}
    rc = sweep_main(["--config", str(sweep["config"]), "--shards", str(sweep["shards"]),
                     "--out", str(sweep["out"]), "--bootstrap", "5"])  # fmt: skip
    assert rc == 0
    assert capsys.readouterr().out.count("done already") == len(finals)
    assert {p: p.stat().st_mtime_ns for p in finals} == before


def test_prediction_then_report(sweep, tmp_path):
    run_dir = sweep["out"] / "runs" / "holdout-xl-20480"
    final = json.loads((run_dir / "final.json").read_text())
    fit = load_fit(sweep["out"] / "fit.json")
    fit.reasons = []  # the report's mechanics with this fit's numbers (verdict: next test)
    counts = {"total": final["params"], "non_embedding": final["non_embedding_params"]}
    pred = predict_run(fit, counts, final["tokens"])
    assert pred.n_params == final["params"] and pred.param_count == "total"
    assert pred.lo <= pred.loss <= pred.hi
    curve = [p.loss for p in pred.curve]
    assert curve == sorted(curve, reverse=True) and pred.curve[-1].tokens == final["tokens"]
    report_dir = tmp_path / "run"
    report_dir.mkdir()
    for name in ("final.json", "metrics.jsonl"):
        (report_dir / name).write_bytes((run_dir / name).read_bytes())
    write_prediction(pred, report_dir)
    assert read_prediction(report_dir) == pred
    paths = write_report(report_dir)
    result = json.loads(paths["json"].read_text())
    assert result["observed"] == final["final_val_loss"]
    assert result["rel_error"] == pytest.approx(
        abs(pred.loss - result["observed"]) / result["observed"]
    )
    assert result["val_curve"] and result["val_curve"][-1]["tokens"] == final["tokens"]
    assert f"{result['observed']:.4f}" in paths["markdown"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_unidentified_law_reports_no_number(sweep, tmp_path):
    run_dir = sweep["out"] / "runs" / "holdout-xl-20480"
    fit = load_fit(sweep["out"] / "fit.json")
    fit.reasons = ["1 distinct N spanning 1× (need ≥ 3 over ≥ 4×)"]
    pred = predict_run(fit, 10_000, 20480)
    assert pred.loss is None and not pred.identified and not pred.curve
    for name in ("final.json", "metrics.jsonl"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    write_prediction(pred, tmp_path)
    paths = write_report(tmp_path)
    result = json.loads(paths["json"].read_text())
    assert result["predicted"] is None and result["rel_error"] is None
    md = paths["markdown"].read_text()
    assert f"{NOT_IDENTIFIED} (1 distinct N" in md


def test_write_run_spec_and_bad_config(tmp_path):
    cfg = SweepConfig.model_validate(MINI)
    spec = plan_sweep(cfg, seq_len=64)[0]
    run_dir = write_run_spec(spec, tmp_path, cfg.set)
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["model"]["d_model"] == 32 and written["schedule"] == "wsd"
    assert written["decay_at"] == spec.decay_at and written["device"] == "cpu"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**MINI, "tokenz": [1]}))
    with pytest.raises(ValueError, match="tokenz"):
        SweepConfig.from_yaml(bad)


def test_cli_reports_too_few_points(tmp_path, capsys):
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(MINI))
    rc = sweep_main(["sweep", "--config", str(tmp_path / "mini.yaml"), "--shards", "unused",
                     "--out", str(tmp_path / "empty"), "--no-train"])  # fmt: skip
    assert rc == 1 and "no finished runs" in capsys.readouterr().err


def test_a_failing_run_is_recorded_and_the_rest_still_runs(train_shards, tmp_path):
    from train.sweep import run_sweep

    cfg = SweepConfig.model_validate(
        {
            **MINI,
            "models": [
                MINI["models"][0],
                {"name": "bad", "n_layer": 1, "n_head": 2, "d_model": 32, "seq_len": 128},
            ],
            "holdout": None,
        }
    )
    table = run_sweep(cfg, train_shards, tmp_path / "out", log=lambda _: None)
    assert sorted(table["run"].to_pylist()) == ["s-wsd", "s-wsd@8"]
    error = json.loads((tmp_path / "out" / "runs" / "bad-wsd" / "error.json").read_text())
    assert "seq_len" in error["error"]
