"""The Prefect flow ``curate``: every step of :mod:`curate.runner` as tasks on Ray.

Per-part steps (extract, per-part stages, global-stage map/apply, mix, encode) are one task per
part (a part holds hundreds of documents or more: Prefect costs ~0.25 s per task); global
reduces, the run's quality model (when the quality stage has no ``model_path``), the mixing
plan, tokenizer training and the shard writer are single reduce tasks.
After every document stage the flow checks conservation over the whole run. The funnel
(and the mixture) is published as a Prefect markdown artifact and written to ``stats.json``;
which Ray node ran each task is written to ``tasks.json``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from curate import runner
from curate.config import EXTRACT_STAGE, PipelineConfig
from curate.report import write_report
from curate.stage import StageStats
from curate.storage import join, write_json_atomic
from flows import runtime  # noqa: F401 - telemetry off before prefect and ray load
from flows.artifacts import publish_report_artifacts

NODE_KEY = "ray_node"  # added to every task's result by _on_node, removed by the flow


def ray_node() -> dict[str, str] | None:
    """The Ray node this process runs on (``id``, ``ip``); None outside Ray."""
    import ray

    if not ray.is_initialized():
        return None
    return {
        "id": ray.get_runtime_context().get_node_id(),
        "ip": ray.util.get_node_ip_address(),
    }


def _on_node(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``fn``, with the Ray node that ran it added to its result under ``NODE_KEY``."""

    def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**fn(*args, **kwargs), NODE_KEY: ray_node()}

    run.__name__, run.__qualname__, run.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return run


def _task(fn: Callable[..., dict[str, Any]], name: str) -> Any:
    return task(_on_node(fn), name=name, cache_policy=NO_CACHE, persist_result=False)


extract_task = _task(runner.run_extract_part, "extract")
stage_part_task = _task(runner.run_stage_part, "stage-part")
quality_train_task = _task(runner.run_quality_train, "train-quality")
global_map_task = _task(runner.run_global_map, "global-map")
global_reduce_task = _task(runner.run_global_reduce, "global-reduce")
global_apply_task = _task(runner.run_global_apply, "global-apply")
mix_plan_task = _task(runner.run_mix_plan, "mix-plan")
mix_part_task = _task(runner.run_mix_part, "mix-part")
tokenizer_task = _task(runner.run_tokenizer, "train-tokenizer")
encode_task = _task(runner.run_encode_part, "encode")
shards_task = _task(runner.run_shards, "write-shards")


@flow(name="curate", log_prints=True)
def curate_flow(cfg: PipelineConfig) -> dict[str, Any]:
    """Curate ``cfg.inputs`` into token shards under ``cfg.run_url``; returns stats.json.

    Retries: Prefect re-runs a task that raised (``prefect.task_retries``), and Ray re-runs one
    whose worker process died (``max_retries``); both are safe since every step is idempotent.
    """
    from prefect_ray.context import remote_options

    with remote_options(max_retries=cfg.prefect.task_retries):
        return _curate(cfg)


def _curate(cfg: PipelineConfig) -> dict[str, Any]:
    logger = get_run_logger()
    retry = {
        "retries": cfg.prefect.task_retries,
        "retry_delay_seconds": cfg.prefect.retry_delay_seconds,
    }
    timings: dict[str, float] = {}
    skipped: dict[str, int] = {}
    stats: dict[str, StageStats] = {}
    placement: dict[str, list[str | None]] = {}  # step -> Ray node id per task
    nodes: dict[str, str] = {}  # Ray node id -> IP

    def placed(step: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        placement[step] = []
        for r in results:
            node = r.pop(NODE_KEY, None)
            placement[step].append(node and node["id"])
            if node:
                nodes[node["id"]] = node["ip"]
        return results

    def per_part(step: str, tsk: Any, args: Callable[[int], tuple]) -> list[dict[str, Any]]:
        start = time.perf_counter()
        futures = [
            tsk.with_options(task_run_name=f"{step}-{i:05d}", **retry).submit(*args(i))
            for i in range(n)
        ]
        results = placed(step, [f.result() for f in futures])
        timings[step] = time.perf_counter() - start
        skipped[step] = sum(bool(r.get("skipped")) for r in results)
        logger.info("%s: %d parts (%d already done)", step, n, skipped[step])
        return results

    def reduce(step: str, tsk: Any, *args: Any) -> dict[str, Any]:
        start = time.perf_counter()
        future = tsk.with_options(task_run_name=step, **retry).submit(*args)
        out = placed(step, [future.result()])[0]
        timings[step] = time.perf_counter() - start
        return out

    def checked(stage: str) -> None:
        stats[stage] = runner.check_stage(cfg, stage, n)  # raises ConservationError
        s = stats[stage]
        logger.info(
            "%s: %d in = %d kept + %d removed + %d quarantined",
            stage,
            s.docs_in,
            s.kept,
            s.removed_total,
            s.quarantined_total,
        )

    start = time.perf_counter()
    parts = runner.plan_run(cfg)
    n = len(parts)
    timings["plan"] = time.perf_counter() - start
    logger.info("run %s: %d parts → %s", cfg.name, n, cfg.run_url)

    per_part(EXTRACT_STAGE, extract_task, lambda i: (cfg, i, parts[i]))
    checked(EXTRACT_STAGE)
    if runner.quality_training_stage(cfg) is not None:
        trained = reduce("quality.train", quality_train_task, cfg, n)
        logger.info("quality model: held-out %s", trained.get("held_out"))
    for k, entry in enumerate(cfg.stages):
        if runner.stage_is_global(cfg, k):
            per_part(f"{entry.name}.map", global_map_task, lambda i, k=k: (cfg, k, i))
            reduce(f"{entry.name}.reduce", global_reduce_task, cfg, k, n)
            per_part(entry.name, global_apply_task, lambda i, k=k: (cfg, k, i))
        else:
            per_part(entry.name, stage_part_task, lambda i, k=k: (cfg, k, i))
        checked(entry.name)

    reduce("mix.plan", mix_plan_task, cfg, n)
    mixed = per_part("mix", mix_part_task, lambda i: (cfg, i))
    reduce("tokenizer", tokenizer_task, cfg, n)
    per_part("encode", encode_task, lambda i: (cfg, i))
    reduce("shards", shards_task, cfg, n)

    report = write_report(cfg, stats, timings, mixed, skipped=skipped)
    write_json_atomic({"nodes": nodes, "steps": placement}, join(cfg.run_url, "tasks.json"))
    logger.info("tasks ran on %d Ray node(s): %s", len(nodes), ", ".join(sorted(nodes.values())))
    create_markdown_artifact(
        key=cfg.prefect.artifact_key,
        markdown=f"# Run `{cfg.name}`\n\n## Funnel\n\n{report['funnel_markdown']}\n"
        f"## Mixture\n\n{report['mixture_markdown']}\n## Steps\n\n{_timings_markdown(timings, skipped)}",
        description=f"Sluice funnel and mixture of run {cfg.name}",
    )
    publish_report_artifacts(cfg.run_url, prefix=f"sluice-{cfg.name}")
    return {k: v for k, v in report.items() if not k.endswith("_markdown")}


def _timings_markdown(timings: dict[str, float], skipped: dict[str, int]) -> str:
    lines = ["| step | seconds | parts already done |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.1f} | {skipped.get(k, '')} |" for k, v in timings.items()]
    return "\n".join(lines) + "\n"


def ray_task_runner(cfg: PipelineConfig, temp_dir: str | None = None) -> Any:
    """prefect-ray's RayTaskRunner: a small local Ray, or the cluster at ``cfg.ray.address``."""
    from prefect_ray import RayTaskRunner

    kwargs = runtime.ray_init_kwargs(
        cfg.ray.address,
        cfg.ray.num_cpus,
        cfg.ray.object_store_memory,
        cfg.ray.temp_dir or temp_dir,
    )
    address = kwargs.pop("address", None)
    if address == "auto":
        kwargs["address"] = "auto"
        address = None
    return RayTaskRunner(address=address, init_kwargs=kwargs)


@contextmanager
def _api(url: str | None) -> Iterator[None]:
    import prefect.settings as ps

    if url:
        with ps.temporary_settings(updates={ps.PREFECT_API_URL: url}):
            yield
    else:
        yield


def run_curate(cfg: PipelineConfig, api_url: str | None = None) -> dict[str, Any]:
    """Run the flow with Ray tasks against the Prefect API ``api_url`` (default: the current
    settings'); returns stats.json as a dict. A local Ray's temp dir is removed afterwards."""
    own_temp = None
    if cfg.ray.address is None and cfg.ray.temp_dir is None:
        own_temp = tempfile.mkdtemp(prefix="sluice-ray-", dir="/tmp")  # short: unix sockets
    try:
        with _api(api_url):
            return curate_flow.with_options(task_runner=ray_task_runner(cfg, own_temp))(cfg)
    finally:
        if own_temp:
            shutil.rmtree(own_temp, ignore_errors=True)
