"""Prefect flow ``ablate``: does a filter make the model better? The same model, token budget
and seeds trained on every variant of the data, evaluated on one held-out set.

    ablate(ablation)            # an AblationConfig (curate.ablation); run_local: no Prefect

1. ``curate-union`` (unless a tokenizer is given): the base's documents with only the hold-out
   stage; its tokenizer is the one every variant uses.
2. ``curate-variant`` per variant: its own run directory; every step call another variant
   already computed with the same fingerprint is copied, not recomputed
   (``curate.ablation.SharedSteps``; the calls run in the task's process).
3. ``eval-set``: the named text or the held-out slice, encoded with the shared tokenizer
   (val split only); every variant's training data = its train split + that val split, and no
   evaluation document id is in any variant's training shards (checked).
4. ``train-seed`` per variant × seed: ``train.trainer.train`` with ``steps`` for the token
   budget and the seed for init and data order; its final val loss is the loss on the common
   set (every sequence of it). A finished run is not trained again.
5. ``ablation-report``: ``ablation.{json,md}`` and a Prefect markdown artifact: per variant the
   documents and tokens kept, the loss in nats/token and bits/byte with its t-interval over the
   seeds run, and the paired difference from the baseline with its interval and whether it is
   distinguishable from seed noise (``train.ablation``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows import runtime  # noqa: F401 - telemetry off before prefect and ray load
from flows.end_to_end import _log
from flows.runtime import as_task, flow_run_namer, in_process


def _train_overrides(abl: Any, seed: int, steps: int) -> list[str]:
    """Evaluation only at the end by default (the user's ``train_set`` may change it); the
    seed, the steps of the token budget and the whole val split (the common set) fixed."""
    return [
        "eval_every=0",
        "decay_branches=false",
        *abl.train_set,
        f"seed={seed}",
        "data_seed=null",
        f"steps={steps}",
        "eval_sequences=0",
    ]


def training_plan(abl: Any, seq_len: int) -> dict[str, Any]:
    """Steps and tokens per run for the token budget (rounded up to whole steps)."""
    from curate.ablation import steps_for
    from train.trainer import TrainConfig

    cfg = TrainConfig.from_yaml(abl.train, _train_overrides(abl, abl.seeds[0], 1))
    per_step = cfg.micro_batch_size * cfg.grad_accum * seq_len
    steps = steps_for(abl.tokens, per_step)
    return {"steps": steps, "tokens_per_step": per_step, "tokens": steps * per_step}


def curate_here(cfg: Any, cache_dir: str, run: str) -> dict[str, Any]:
    """Curate one variant (or the union) in this process, sharing step calls by fingerprint;
    returns its stats.json and its ledger (calls computed / shared / done per step)."""
    from curate.ablation import SharedSteps, curate_variant
    from curate.runner import _in_process

    shared = SharedSteps(cache_dir)
    stats = curate_variant(cfg, shared, _in_process, run)
    return {"stats": stats, "ledger": shared.ledger[run]}


def curate_on_ray(cfg: Any, cache_dir: str, run: str) -> dict[str, Any]:
    """Curate one variant (or the union) with the ``curate`` flow (a subflow, its calls as
    tasks on its own local Ray, or the cluster the config names), sharing step calls."""
    from flows.curate import run_curate

    stats = run_curate(cfg, share_steps=cache_dir, share_label=run)
    return {"stats": stats, "ledger": stats.pop("shared_steps")}


@task(name="eval-set", persist_result=False)
def eval_task(abl: Any, cfgs: dict[str, Any], tokenizer: str, shards: dict[str, str]) -> dict:
    """The common evaluation set, encoded; the training data of every variant; disjointness."""
    from curate.ablation import (
        check_disjoint,
        eval_documents,
        training_data,
        write_eval_shards,
    )
    from curate.layout import AblationLayout
    from curate.storage import parquet_bytes, write_bytes_atomic

    lay = AblationLayout(abl.root)
    docs, how = eval_documents(abl, cfgs)
    info = {**how, **write_eval_shards(docs, tokenizer, cfgs[abl.baseline_name], lay.eval_shards)}
    write_bytes_atomic(parquet_bytes(docs), lay.eval_docs)
    for name, variant_shards in shards.items():
        training_data(variant_shards, lay.eval_shards, lay.train_data(name))
    train_docs = check_disjoint(info["doc_ids"], shards)
    n_ids = len(info.pop("doc_ids"))
    return {**info, "eval_doc_ids": n_ids, "train_docs": train_docs, "disjoint": True}


@task(name="train-seed", persist_result=False)
def train_task(abl: Any, variant: str, seed: int, steps: int) -> dict[str, Any]:
    """One training run on a variant's data; its final.json (not retrained when finished)."""
    from curate.layout import AblationLayout
    from train.trainer import TrainConfig, train

    lay = AblationLayout(abl.root)
    out = Path(lay.train_run(variant, seed))
    final = out / "final.json"
    if final.exists() and json.loads(final.read_text()).get("steps") == steps:
        _log(f"{variant} seed {seed}: trained already ({steps} steps)")
        return json.loads(final.read_text())
    cfg = TrainConfig.from_yaml(abl.train, _train_overrides(abl, seed, steps))
    result = train(cfg, lay.train_data(variant), out)
    _log(f"{variant} seed {seed}: val loss {result['final_val_loss']:.4f} on the common set")
    return result


def build_report(
    abl: Any,
    curation: dict[str, dict[str, Any]],
    evals: dict[str, Any],
    plan: dict[str, Any],
    runs: dict[str, dict[int, dict[str, Any]]],
    tokenizer: str,
    timings: dict[str, float],
) -> dict[str, Any]:
    """Per variant: kept documents and tokens, loss (nats/token, bits/byte) with its interval
    over the seeds run, and the paired difference from the baseline."""
    from train.ablation import bits_per_byte, paired_difference, seeds_to_resolve, t_interval

    c = abl.confidence
    tokens, target_bytes = evals["target_tokens"], evals["target_bytes"]
    base_losses = {s: r["final_val_loss"] for s, r in runs[abl.baseline_name].items()}
    variants = {}
    for v in abl.variants:
        losses = {s: r["final_val_loss"] for s, r in runs[v.name].items()}
        bpb = {s: bits_per_byte(x, tokens, target_bytes) for s, x in losses.items()}
        info = curation[v.name]
        entry: dict[str, Any] = {
            "docs_kept": info["docs_kept"],
            "tokens_kept": info["tokens_kept"],
            "epochs": plan["tokens"] / info["tokens_kept"] if info["tokens_kept"] else math.inf,
            "steps_ledger": info["ledger"],
            "seeds": sorted(losses),
            "loss_per_seed": {str(s): x for s, x in sorted(losses.items())},
            "bpb_per_seed": {str(s): x for s, x in sorted(bpb.items())},
            "loss": t_interval(list(losses.values()), c),
            "bpb": t_interval(list(bpb.values()), c),
        }
        if v.name != abl.baseline_name:
            d = paired_difference(base_losses, losses, c)
            d_bpb = paired_difference(
                {s: bits_per_byte(x, tokens, target_bytes) for s, x in base_losses.items()},
                bpb,
                c,
            )
            # paired seeds per variant for a 0.5% difference to leave the interval's half-width
            d["seeds_for_half_percent"] = (
                None if d["sd"] is None else seeds_to_resolve(d["sd"], d["mean_baseline"], 0.005, c)
            )
            entry["vs_baseline"] = {"loss": d, "bpb": d_bpb}
        variants[v.name] = entry
    first = next(iter(runs[abl.baseline_name].values()))
    return {
        "name": abl.name,
        "root": abl.root,
        "baseline": abl.baseline_name,
        "confidence": c,
        "seeds": abl.seeds,
        "tokenizer": tokenizer,
        "eval": evals,
        "training": {
            **plan,
            "params": first["params"],
            "non_embedding_params": first["non_embedding_params"],
            "flops_per_run": first["flops"],
            "train_config": abl.train,
            "train_set": abl.train_set,
        },
        "variants": variants,
        "timings_s": timings,
    }


def _signed(x: float, digits: int = 4) -> str:
    return f"{x:+.{digits}f}"


def report_markdown(r: dict[str, Any]) -> str:
    """The ablation table, the per-seed losses and the step-sharing ledger."""
    pct = int(round(100 * r["confidence"]))
    e, t = r["eval"], r["training"]
    source = "named text" if e.get("named") else "held-out slice of the documents"
    if e.get("clean_like"):
        source += f" that {e['clean_like']}'s {', '.join(e['cleaned_by'])} keep"
    lines = [
        f"# Ablation `{r['name']}`",
        "",
        f"Same model ({t['params']:,} parameters), {t['tokens']:,} training tokens "
        f"({t['steps']} steps × {t['tokens_per_step']:,}) and seeds {r['seeds']} for every "
        f"variant; one tokenizer (`{r['tokenizer']}`). Evaluation: {e['documents']:,} documents "
        f"({source}), {e['target_tokens']:,} target tokens = {e['target_bytes']:,} bytes, held "
        f"out of every variant's training shards (checked by document id). Intervals: "
        f"Student-t, {pct}%, over the seeds run; differences paired by seed "
        f"(variant − {r['baseline']}).",
        "",
        "| variant | docs kept | tokens kept | epochs | val loss (nats/token) | bits/byte "
        "| Δ loss vs baseline | Δ % | distinguishable |",
        "|---|---:|---:|---:|---|---|---|---:|---|",
    ]
    from train.ablation import fmt_interval

    for name, v in r["variants"].items():
        loss, bpb = v["loss"], v["bpb"]
        row = (
            f"| {name}{' (baseline)' if name == r['baseline'] else ''} | {v['docs_kept']:,} "
            f"| {v['tokens_kept']:,} | {v['epochs']:.2f} | "
            f"{fmt_interval(loss['mean'], loss['lo'], loss['hi'])} | "
            f"{fmt_interval(bpb['mean'], bpb['lo'], bpb['hi'])} |"
        )
        d = v.get("vs_baseline", {}).get("loss")
        if d is None:
            row += " — | — | — |"
        else:
            if d["lo"] is None:
                interval = f"{_signed(d['mean'])} (no interval: {len(d['seeds'])} seed)"
                verdict = "unknown (1 seed)"
            else:
                interval = f"{_signed(d['mean'])} [{_signed(d['lo'])}, {_signed(d['hi'])}]"
                verdict = "yes" if d["distinguishable"] else "no (interval holds 0)"
            row += f" {interval} | {100 * d['relative']:+.2f}% | {verdict} |"
        lines.append(row)
    lines += ["", "Per seed (val loss, nats/token):", "",
              "| variant | " + " | ".join(f"seed {s}" for s in r["seeds"]) + " |",
              "|---|" + "---:|" * len(r["seeds"])]  # fmt: skip
    for name, v in r["variants"].items():
        cells = [v["loss_per_seed"].get(str(s)) for s in r["seeds"]]
        lines.append(
            f"| {name} | " + " | ".join("—" if x is None else f"{x:.4f}" for x in cells) + " |"
        )
    needs = [
        f"{name} {v['vs_baseline']['loss']['seeds_for_half_percent']}"
        for name, v in r["variants"].items()
        if v.get("vs_baseline") and v["vs_baseline"]["loss"].get("seeds_for_half_percent")
    ]
    if needs:
        lines += ["", "Seeds per variant for a 0.5% loss difference to be distinguishable at "
                  f"this seed noise (paired t, {pct}%): " + ", ".join(needs) + "."]  # fmt: skip
    lines += [
        "",
        "Curation steps (calls computed here / shared from another variant / done before):",
        "",
    ]
    if r.get("union_ledger"):
        parts = [f"{s} {c['computed']}/{c['shared']}/{c['done']}"
                 for s, c in r["union_ledger"].items()]  # fmt: skip
        lines.append("- union (the shared tokenizer's run): " + ", ".join(parts))
    for name, v in r["variants"].items():
        parts = [
            f"{step} {c['computed']}/{c['shared']}/{c['done']}"
            for step, c in v["steps_ledger"].items()
        ]
        lines.append(f"- {name}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


@task(name="ablation-report", persist_result=False)
def report_task(abl: Any, report: dict[str, Any]) -> dict[str, Any]:
    from curate.layout import AblationLayout
    from curate.storage import write_bytes_atomic, write_json_atomic
    from flows.runtime import in_prefect_run

    lay = AblationLayout(abl.root)
    write_json_atomic(report, lay.report_json)
    markdown = report_markdown(report)
    write_bytes_atomic(markdown.encode(), lay.report_md)
    if in_prefect_run():
        from flows.artifacts import artifact_key

        create_markdown_artifact(
            key=artifact_key("sluice-ablation", abl.name),
            markdown=markdown,
            description=f"Sluice ablation {abl.name}: val loss per variant with intervals",
        )
    return {**report, "markdown": markdown, "paths": {"json": lay.report_json,
                                                      "markdown": lay.report_md}}  # fmt: skip


def _chain(
    abl: Any, call: Callable[..., Any], curate: Callable[[Any, str, str], dict[str, Any]]
) -> dict[str, Any]:
    """The ablation's steps, once for both executors: ``call(task, *args)`` runs a step as a
    Prefect task or as its plain function; ``curate(cfg, step cache, run)`` curates a run."""
    from curate.ablation import variant_config
    from curate.layout import AblationLayout, RunLayout
    from curate.runner import stage_names
    from curate.shards.format import load_manifest

    lay = AblationLayout(abl.root)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - start, 2)
        _log(f"{name}: {timings[name]:.1f} s")
        return out

    tokenizer = abl.tokenizer
    ledgers: dict[str, Any] = {}
    if tokenizer is None:
        union = variant_config(abl, None, None)
        got = timed("curate union", lambda: curate(union, lay.step_cache, "union"))
        ledgers["union"] = got["ledger"]
        tokenizer = str(Path(RunLayout(union.run_url).tokenizer_model).resolve())
    cfgs = {v.name: variant_config(abl, v, tokenizer) for v in abl.variants}
    curation: dict[str, dict[str, Any]] = {}
    for name, cfg in cfgs.items():
        got = timed(f"curate {name}", lambda cfg=cfg, name=name: curate(
            cfg, lay.step_cache, name))  # fmt: skip
        shards = RunLayout(cfg.run_url).shards_dir
        kept = got["stats"]["stages"][stage_names(cfg)[-1]]["kept"]
        curation[name] = {
            "docs_kept": int(kept),
            "tokens_kept": load_manifest(shards).splits["train"].tokens,
            "ledger": got["ledger"],
            "shards": shards,
        }
    baseline_cfg = cfgs[abl.baseline_name]
    evals = timed("eval set", lambda: call(eval_task, abl, cfgs, tokenizer,
                                           {n: c["shards"] for n, c in curation.items()}))  # fmt: skip
    plan = training_plan(abl, baseline_cfg.shards.seq_len)
    runs: dict[str, dict[int, dict[str, Any]]] = {v.name: {} for v in abl.variants}
    for seed in abl.seeds:  # seed-major: a stopped ablation has every variant at some seeds
        for v in abl.variants:
            runs[v.name][seed] = timed(f"train {v.name} seed {seed}", lambda v=v, seed=seed: call(
                train_task, abl, v.name, seed, plan["steps"]))  # fmt: skip
    report = build_report(abl, curation, evals, plan, runs, tokenizer, timings)
    report["union_ledger"] = ledgers.get("union")
    return call(report_task, abl, report)  # the markdown is written here, with the union


@flow(
    name="ablate", log_prints=True, flow_run_name=flow_run_namer(lambda p: p["abl"].name, "ablate")
)
def ablate(abl: Any) -> dict[str, Any]:
    """Curate every variant (shared steps computed once), train the same model with the same
    budget and seeds on each, evaluate on the common set, report with intervals. Each
    variant's curation is a ``curate`` subflow on Ray, its calls shared by fingerprint."""
    return _chain(abl, as_task, curate_on_ray)


def run_local(abl: Any) -> dict[str, Any]:
    """The same steps in this process, without Prefect (``sluice ablate --local``)."""
    return _chain(abl, in_process, curate_here)
