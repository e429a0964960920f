"""A scaling sweep: a grid of small models × token budgets, trained, then fitted to L(N, D).

Schedule choice (``schedule`` in the sweep config):

- ``wsd`` (default): **one run per model**, warmup-stable-decay, trained to the largest budget;
  every smaller budget is a decay branch (``TrainConfig.decay_at``): the trainer keeps the
  stable-phase checkpoint where a run of that length would start decaying and trains a decayed
  copy from it. One model costs ``D_max + Σ decay_frac · D_i`` tokens instead of ``Σ D_i``, and
  every point is a fully annealed run (Hägele et al. 2024 show WSD branches match cosine runs).
- ``cosine``: independent runs, one per (model, budget), each with its own cosine schedule —
  the Chinchilla protocol; use it to check the WSD points.

The held-out run (``holdout``) is always its own run; it is left out of the fit in the
prediction check (``train/report.py``). Every run lives in ``<out>/runs/<name>/`` with
``run_spec.json`` and ``config.yaml`` (the full TrainConfig); a finished run (``final.json``)
is skipped on rerun and an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field

from train.scaling import (
    DEFAULT_PARAM_COUNT,
    FitWeights,
    ParamCount,
    gpt_params,
    training_flops,
)

SWEEP_TABLE_SCHEMA = pa.schema(
    [
        ("run", pa.string()),
        ("model", pa.string()),
        ("role", pa.string()),  # "fit", "holdout" or "short" (< fit_min_steps: not fitted)
        ("n_params", pa.int64()),  # N the law is fitted on (the sweep's ``param_count``)
        ("tokens", pa.int64()),  # D
        ("flops", pa.float64()),  # C = 6 N D (the law's compute, N as above)
        ("flops_with_attention", pa.float64()),  # the trainer's FLOPs/token × D (head + attention)
        ("val_loss", pa.float64()),
        ("steps", pa.int64()),
        ("params_total", pa.int64()),
        ("params_non_embedding", pa.int64()),
    ]
)


class ModelShape(BaseModel):
    """A model of the sweep: a name and the GPTConfig fields it sets (n_layer, d_model, ...);
    optionally its own token budgets (``tokens``, default: the sweep's) and overrides (``set``)."""

    model_config = ConfigDict(extra="allow")
    name: str
    tokens: list[int] | None = None
    set: list[str] = Field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k not in ("name", "tokens", "set")}


class SizeScaling(BaseModel):
    """Optimizer settings per model size, as Porian et al. 2024 ("Resolving Discrepancies in
    Compute-Optimal Scaling of Language Models") found necessary for a Chinchilla-consistent
    law at small scale: (1) warm-up no longer than about N tokens (Kaplan's long fixed warm-up
    hurt the small models), (2) learning rate tuned per size, falling with N (here the power
    law ``lr = lr_ref · (N / n_ref)^−lr_exponent``, its constants our choice for tiny models),
    (3) a higher AdamW β2 (0.99–0.999) at small batches (≲ 100k tokens per step)."""

    model_config = ConfigDict(extra="forbid")
    lr_ref: float = 3e-3
    n_ref: float = 1e5
    lr_exponent: float = 0.25
    warmup_tokens_per_param: float = 1.0  # warm-up tokens = this × N ...
    warmup_max_frac: float = 0.25  # ... but at most this fraction of the smallest budget
    beta2: float | None = 0.99  # None: the base config's

    def overrides(self, n_params: int, tokens_per_step: int, smallest_steps: int) -> list[str]:
        lr = self.lr_ref * (n_params / self.n_ref) ** (-self.lr_exponent)
        warmup = self.warmup_tokens_per_param * n_params / tokens_per_step
        warmup = int(max(1, min(round(warmup), self.warmup_max_frac * smallest_steps)))
        out = [f"lr={lr:.4g}", f"warmup_steps={warmup}"]
        return out + ([f"beta2={self.beta2}"] if self.beta2 is not None else [])


class HoldoutRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelShape
    tokens: int


class SweepConfig(BaseModel):
    """configs/sweep/*.yaml."""

    model_config = ConfigDict(extra="forbid")
    base: str  # TrainConfig YAML; relative paths are taken from the sweep file's directory
    set: list[str] = Field(default_factory=list)  # overrides for every run (key=value)
    schedule: Literal["wsd", "cosine"] = "wsd"
    models: list[ModelShape]
    tokens: list[int]  # D budgets; rounded down to whole optimizer steps
    holdout: HoldoutRun | None = None
    seq_len: int | None = None  # tokens per sequence; None: from the shard manifest
    fit_bootstrap: int = 200  # bootstrap refits for the intervals
    # "replicate_noise": weigh each point by 1/σ(D), the run-to-run noise fitted to the points
    # trained with several seeds (train.scaling.replicate_noise); "none": all points alike
    fit_weights: FitWeights = "none"
    # N of the law: "total" (embeddings included, Pearce & Song 2024 / Porian et al. 2024 — see
    # train/scaling.py) or "non_embedding" (Kaplan et al. 2020)
    param_count: ParamCount = DEFAULT_PARAM_COUNT
    hparams: SizeScaling | None = None  # lr / warm-up / β2 per model size (None: ``set`` only)
    # Points of fewer optimizer steps are trained and shown (role "short") but left out of every
    # fit: L(N, D) has no term for the optimiser's transient, and in the first few hundred steps
    # a larger model is *worse* at equal D (measured: bench/RESULTS.md, CPU study), which no
    # E + A/N^α + B/D^β can fit. 0: fit every point.
    fit_min_steps: int = Field(0, ge=0)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepConfig:
        from curate.config import ConfigError, load_model_yaml

        path = Path(path)
        cfg = load_model_yaml(cls, path)
        base = Path(cfg.base)
        if not base.is_absolute() and not base.exists():
            base = path.parent / base
        if not base.exists():
            raise ConfigError(f"{path}: base: not found: {cfg.base}")
        return cfg.model_copy(update={"base": str(base)})


class RunSpec(BaseModel):
    """One trainer invocation: the base config plus overrides, and the D points it yields."""

    model_config = ConfigDict(extra="forbid")
    name: str
    model: str
    role: Literal["fit", "holdout"] = "fit"
    base: str
    overrides: list[str]  # key=value, applied after the sweep's ``set``
    steps: int
    decay_at: list[int] = Field(default_factory=list)
    tokens: list[int]  # the D points this run reports (ascending)


def _tokens_per_step(base: dict[str, Any], set_: list[str], seq_len: int) -> int:
    from train.trainer import apply_overrides

    data = apply_overrides(json.loads(json.dumps(base)), list(set_))
    mbs = int(data.get("micro_batch_size", 8))
    accum = int(data.get("grad_accum", 1))
    return mbs * accum * seq_len


def shape_params(
    cfg: SweepConfig, shape: ModelShape, vocab_size: int, count: ParamCount | None = None
) -> int:
    """N of a sweep model (``count``: default the sweep's ``param_count``)."""
    from train.trainer import TrainConfig

    model = TrainConfig.from_yaml(cfg.base, cfg.set).model.model_copy(
        update={**shape.fields(), "vocab_size": vocab_size}
    )
    return gpt_params(model, count or cfg.param_count)


def plan_sweep(
    cfg: SweepConfig, seq_len: int | None = None, vocab_size: int | None = None
) -> list[RunSpec]:
    """The runs of a sweep (single process; ``seq_len`` and ``vocab_size`` from the manifest
    unless configured; ``vocab_size`` is needed only for ``hparams``, which depend on N)."""
    seq_len = seq_len or cfg.seq_len
    if not seq_len:
        raise ValueError("plan_sweep needs seq_len (from the sweep config or the shard manifest)")
    if cfg.hparams and not vocab_size:
        raise ValueError("plan_sweep needs vocab_size for per-size hparams (N counts embeddings)")
    base = yaml.safe_load(Path(cfg.base).read_text()) or {}
    per_step = _tokens_per_step(base, cfg.set, seq_len)
    all_budgets = [d for m in cfg.models for d in (m.tokens or cfg.tokens)] + cfg.tokens
    smallest_steps = max(1, min(all_budgets) // per_step)

    def model_overrides(shape: ModelShape) -> list[str]:
        out = [f"model.{k}={json.dumps(v)}" for k, v in shape.fields().items()]
        if cfg.hparams:
            n = shape_params(cfg, shape, int(vocab_size or 0))
            out += cfg.hparams.overrides(n, per_step, smallest_steps)
        return out + list(shape.set)

    specs: list[RunSpec] = []
    for shape in cfg.models:
        budgets = sorted({max(1, d // per_step) for d in (shape.tokens or cfg.tokens)})
        if cfg.schedule == "wsd":
            specs.append(
                RunSpec(
                    name=f"{shape.name}-wsd",
                    model=shape.name,
                    base=cfg.base,
                    overrides=[
                        *model_overrides(shape),
                        "schedule=wsd",
                        f"steps={budgets[-1]}",
                        f"decay_at={json.dumps(budgets[:-1])}",
                        "decay_branches=true",
                    ],
                    steps=budgets[-1],
                    decay_at=budgets[:-1],
                    tokens=[s * per_step for s in budgets],
                )
            )
        else:
            for steps in budgets:
                specs.append(
                    RunSpec(
                        name=f"{shape.name}-{steps * per_step}",
                        model=shape.name,
                        base=cfg.base,
                        overrides=[*model_overrides(shape), "schedule=cosine", f"steps={steps}"],
                        steps=steps,
                        tokens=[steps * per_step],
                    )
                )
    if cfg.holdout:
        shape, steps = cfg.holdout.model, max(1, cfg.holdout.tokens // per_step)
        schedule = ["schedule=wsd", "decay_at=[]"] if cfg.schedule == "wsd" else []
        specs.append(
            RunSpec(
                name=f"holdout-{shape.name}-{steps * per_step}",
                model=shape.name,
                role="holdout",
                base=cfg.base,
                overrides=[*model_overrides(shape), *schedule, f"steps={steps}"],
                steps=steps,
                tokens=[steps * per_step],
            )
        )
    return specs


def run_config(spec: RunSpec, sweep_set: list[str]):
    """The TrainConfig of a run: base YAML + the sweep's ``set`` + the run's overrides."""
    from train.trainer import TrainConfig

    return TrainConfig.from_yaml(spec.base, [*sweep_set, *spec.overrides])


def write_run_spec(spec: RunSpec, out_dir: str | Path, sweep_set: list[str] | None = None) -> Path:
    """``<out_dir>/runs/<name>/`` with run_spec.json and config.yaml; returns the run dir."""
    run_dir = Path(out_dir) / "runs" / spec.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_spec.json").write_text(
        json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    )
    cfg = run_config(spec, sweep_set or [])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return run_dir


def run_sweep(cfg: SweepConfig, shards_dir: str | Path, out_dir: str | Path, log=print) -> pa.Table:
    """Train every run of the sweep in this process (skipping finished ones); collect them."""
    from curate.shards.format import load_manifest
    from train.trainer import train

    manifest = load_manifest(shards_dir)
    specs = plan_sweep(cfg, seq_len=manifest.seq_len, vocab_size=manifest.tokenizer.vocab_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(
        json.dumps(
            {"config": cfg.model_dump(mode="json"), "runs": [s.model_dump() for s in specs]},
            indent=2,
        )
        + "\n"
    )
    for i, spec in enumerate(specs, 1):
        run_dir = write_run_spec(spec, out, cfg.set)
        if (run_dir / "final.json").exists():
            log(f"[{i}/{len(specs)}] {spec.name}: done already")
            continue
        log(f"[{i}/{len(specs)}] {spec.name}: {spec.steps} steps, D = {spec.tokens}")
        try:
            final = train(run_config(spec, cfg.set), shards_dir, run_dir, resume=True)
        except (RuntimeError, ValueError) as e:  # diverged, data mismatch: the rest still runs
            (run_dir / "error.json").write_text(
                json.dumps({"run": spec.name, "error": f"{type(e).__name__}: {e}"}) + "\n"
            )
            log(f"[{i}/{len(specs)}] {spec.name}: FAILED ({type(e).__name__}: {e})")
            continue
        log(f"[{i}/{len(specs)}] {spec.name}: val loss {final['final_val_loss']:.4f}")
    table = collect_sweep(out, cfg.param_count)
    (out / "sweep_table.json").write_text(json.dumps(table.to_pylist(), indent=2) + "\n")
    return table


def collect_sweep(sweep_dir: str | Path, param_count: ParamCount | None = None) -> pa.Table:
    """One row per (N, D) point of the finished runs under ``<sweep_dir>/runs/`` (sorted by C);
    a ``fit`` point of fewer than the config's ``fit_min_steps`` steps gets role ``short``.

    ``param_count`` picks N (default: the one in ``<sweep_dir>/sweep.json``, else the project's
    default); both counts are kept in ``params_total`` / ``params_non_embedding``."""
    meta = Path(sweep_dir) / "sweep.json"
    config = json.loads(meta.read_text()).get("config", {}) if meta.exists() else {}
    if param_count is None:
        param_count = config.get("param_count", DEFAULT_PARAM_COUNT)
    min_steps = int(config.get("fit_min_steps", 0))
    rows: list[dict[str, Any]] = []
    for final_path in sorted(Path(sweep_dir).glob("runs/*/final.json")):
        run_dir = final_path.parent
        final = json.loads(final_path.read_text())
        spec = json.loads((run_dir / "run_spec.json").read_text())
        total, non_emb = int(final["params"]), int(final["non_embedding_params"])
        n = total if param_count == "total" else non_emb
        per_token = float(final["flops_per_token"])
        points = [(run_dir.name, final["tokens"], final["final_val_loss"], final["steps"])]
        for branch in (final.get("decay_branches") or {}).values():
            points.append(
                (f"{run_dir.name}@{branch['steps']}", branch["tokens"], branch["final_val_loss"],
                 branch["steps"])
            )  # fmt: skip
        wanted = set(spec.get("tokens") or [])  # the plan's budgets (a rerun may drop some)
        for name, tokens, loss, steps in points:
            if wanted and int(tokens) not in wanted:
                continue
            if not (isinstance(loss, int | float) and math.isfinite(loss)):
                continue  # a point without a finite val loss cannot be fitted
            rows.append(
                {
                    "run": name,
                    "model": spec["model"],
                    "role": "short"
                    if spec["role"] == "fit" and steps < min_steps
                    else spec["role"],
                    "n_params": n,
                    "tokens": int(tokens),
                    "flops": training_flops(n, tokens),
                    "flops_with_attention": per_token * tokens,
                    "val_loss": float(loss),
                    "steps": int(steps),
                    "params_total": total,
                    "params_non_embedding": non_emb,
                }
            )
    rows.sort(key=lambda r: (r["flops"], r["run"]))
    return pa.Table.from_pylist(rows, schema=SWEEP_TABLE_SCHEMA)


def sweep_markdown(table: pa.Table) -> str:
    lines = [
        "| run | role | N total | N non-emb | D tokens | D/N | C = 6ND | C (head+attn) | val loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table.to_pylist():
        lines.append(
            f"| {r['run']} | {r['role']} | {r['params_total']:,} | {r['params_non_embedding']:,}"
            f" | {r['tokens']:,} | {r['tokens'] / r['n_params']:.3g} | {r['flops']:.3g} |"
            f" {r['flops_with_attention']:.3g} | {r['val_loss']:.4f} |"
        )
    return "\n".join(lines) + "\n"
