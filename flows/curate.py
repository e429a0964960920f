"""The Prefect flow ``curate``: the plan of ``curate.plan`` run as Prefect tasks on Ray.

The flow is the executor loop of :func:`curate.runner.execute` with one difference: a step's
calls run as Ray tasks (one per part for a map; one task for a reduce). Consecutive map steps
run as a chain (``curate.runner.step_chains``): one Ray task per part runs that part through
all of them, so no part waits for the slowest part of each step. Calls that are done (their
markers match) are not submitted. ``prefect.parts_per_task``: ``all`` (default) runs one
Prefect task per step or chain in the flow's process, which starts the Ray task of each call
(the UI shows ``extract..exact_dedup.map-42-parts``, a progress artifact and a log line per
part); ``1`` submits a Prefect task per call, run on Ray (``extract..exact_dedup.map-00003``);
``N`` > 1 a Prefect task on Ray per batch of N calls, each still its own Ray task. A reduce
is one Prefect task on Ray. After every
document stage the loop checks conservation over the whole run. The funnel (and the mixture)
is published as a Prefect markdown artifact and written to ``stats.json``; which Ray node ran
each task is written to ``tasks.json``.
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
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_ray.context import remote_options

from curate.config import PipelineConfig
from curate.layout import RunLayout
from curate.plan import Plan, Step, build_plan
from curate.runner import done_result, execute, nothing_to_run, run_step
from curate.storage import write_json_atomic
from flows import runtime  # noqa: F401 - telemetry off before prefect and ray load
from flows.artifacts import publish_sections

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


# One task for every step: the worker builds the plan from the config and runs the step.
step_task = task(_on_node(run_step), name="step", cache_policy=NO_CACHE, persist_result=False)


def dispatched(
    fn: Callable[..., dict[str, Any]],
    calls: list[tuple[Any, ...]],
    retries: int,
    label: str,
    retry_delay: float = 0.0,
    cpus: int = 1,
) -> list[dict[str, Any]]:
    """Each call of ``fn`` as its own Ray task, started from this process (the flow's with
    ``prefect.parts_per_task: all``, a Ray worker's for a batch of N) and waited for; results in
    call order. A call that raised is started again ``retry_delay`` seconds later (as Prefect
    does a task: ``prefect.retry_delay_seconds``), and Ray re-runs one whose worker died, each
    up to ``retries`` times; each finished call is logged, and the share done is a progress
    artifact of the task run. Each call reserves ``cpus`` CPUs (:func:`reserved_cpus`)."""
    import ray
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from ray.exceptions import RayTaskError

    if not ray.is_initialized():  # a finished run's flow starts no Ray: what is left runs here
        return [fn(*args) for args in calls]
    # SPREAD: a cluster's nodes share the parts even when they are short (Ray would otherwise
    # keep feeding a worker of the driver's node that it already holds)
    remote = ray.remote(
        num_cpus=reserved_cpus(cpus), max_retries=retries, scheduling_strategy="SPREAD"
    )(_on_node(fn))
    call_of: dict[Any, int] = {}  # Ray ref -> index of its call

    def start(k: int) -> Any:
        ref = remote.remote(*calls[k])
        call_of[ref] = k
        return ref

    results: list[Any] = [None] * len(calls)
    raised = [0] * len(calls)  # times each call raised
    waiting: list[tuple[float, int]] = []  # (monotonic time to start again, call) after a raise
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, description=f"calls of {label} done")
    pending = [start(k) for k in range(len(calls))]
    done = 0
    try:
        while pending or waiting:
            now = time.monotonic()
            pending += [start(k) for due, k in waiting if due <= now]
            waiting = [(due, k) for due, k in waiting if due > now]
            timeout = min(due for due, _ in waiting) - now if waiting else None
            if not pending:
                time.sleep(max(0.0, timeout or 0.0))
                continue
            ready, pending = ray.wait(pending, num_returns=1, timeout=timeout)
            for ref in ready:
                k = call_of.pop(ref)
                try:
                    results[k] = ray.get(ref)
                except RayTaskError as e:
                    if raised[k] >= retries:
                        raise
                    raised[k] += 1
                    logger.warning(
                        "%s: call %d raised (%s); starting it again in %.3g s (retry %d of %d)",
                        label, k, e.cause, retry_delay, raised[k], retries,
                    )  # fmt: skip
                    waiting.append((time.monotonic() + retry_delay, k))
                    continue
                done += 1
                logger.info("%s: %d of %d calls done", label, done, len(calls))
                if progress is not None:
                    update_progress_artifact(progress, 100.0 * done / len(calls))
    except BaseException:
        for ref in pending:  # the flow fails: no call keeps running for it
            ray.cancel(ref)
        raise
    return results


def reserved_cpus(wanted: int) -> int:
    """CPUs to reserve on Ray for a call that can use ``wanted`` cores: as many, but no more
    than the largest live node has (a request no node can meet would wait for ever). Ray sets
    the task's ``OMP_NUM_THREADS`` to it, which bounds the call's threads."""
    import ray

    if wanted <= 1 or not ray.is_initialized():
        return 1
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    return max(1, min(wanted, int(largest)))


def run_steps(
    cfg: PipelineConfig, name: str, indices: list[int], verify: bool, force: bool, cpus: int = 1
) -> list[dict[str, Any]]:
    """Several calls of step ``name`` from one Prefect task, each its own Ray task reserving
    ``cpus`` (the step's ``Step.cpus``; see :func:`dispatched`); results in order."""
    calls = [(cfg, name, i, verify, force) for i in indices]
    return dispatched(
        run_step, calls, cfg.prefect.task_retries, name, cfg.prefect.retry_delay_seconds, cpus
    )


# submitted (on Ray) per batch of N calls, or called in the flow (in its process) for all of them
batch_task = task(run_steps, name="steps", cache_policy=NO_CACHE, persist_result=False)


def run_chain(
    cfg: PipelineConfig, names: list[str], index: int, verify: bool, forces: list[bool]
) -> dict[str, Any]:
    """Part ``index`` of every map step of a chain (``curate.runner.step_chains``), in order,
    in this process: ``{"results": [one per step]}``. A retry after a crash skips the steps
    already done (their markers match)."""
    plan = build_plan(cfg)
    return {
        "results": [
            run_step(plan, name, index, verify, force)
            for name, force in zip(names, forces, strict=True)
        ]
    }


chain_task = task(_on_node(run_chain), name="chain", cache_policy=NO_CACHE, persist_result=False)


def run_chains(
    cfg: PipelineConfig,
    names: list[str],
    indices: list[int],
    verify: bool,
    forces: list[bool],
    cpus: int = 1,
) -> list[dict[str, Any]]:
    """Several parts of a chain from one Prefect task, each its own Ray task reserving ``cpus``
    (the most any step of the chain uses; see :func:`dispatched`); results in part order."""
    calls = [(cfg, names, i, verify, forces) for i in indices]
    label = f"{names[0]}..{names[-1]}"
    return dispatched(
        run_chain, calls, cfg.prefect.task_retries, label, cfg.prefect.retry_delay_seconds, cpus
    )


# as batch_task: submitted per batch of N parts, or called in the flow for all of them
chain_batch_task = task(run_chains, name="chains", cache_policy=NO_CACHE, persist_result=False)


@flow(name="curate", log_prints=True)
def curate_flow(
    cfg: PipelineConfig,
    verify: bool = False,
    force_from: str | None = None,
    share_steps: str | None = None,
    share_label: str | None = None,
) -> dict[str, Any]:
    """Curate ``cfg.inputs`` into token shards under ``cfg.run_url``; returns stats.json.

    Retries: Prefect re-runs a task that raised (``prefect.task_retries``), and Ray re-runs one
    whose worker process died (``max_retries``); both are safe since every step is idempotent.
    ``share_steps``: a step cache shared with other runs (``curate.ablation.SharedSteps``): a
    call another run computed with the same fingerprint is copied, not submitted; the result
    then also holds ``shared_steps``, the calls computed / shared / done per step.
    """
    with remote_options(max_retries=cfg.prefect.task_retries):
        return _curate(cfg, verify, force_from, share_steps, share_label)


def _curate(
    cfg: PipelineConfig,
    verify: bool,
    force_from: str | None,
    share_steps: str | None = None,
    share_label: str | None = None,
) -> dict[str, Any]:
    logger = get_run_logger()
    retry = {
        "retries": cfg.prefect.task_retries,
        "retry_delay_seconds": cfg.prefect.retry_delay_seconds,
    }
    placement: dict[str, list[str | None]] = {}  # step -> Ray node id per task
    nodes: dict[str, str] = {}  # Ray node id -> IP

    def submitted(plan: Plan, step: Step, indices: list[int | None]) -> list[dict[str, Any]]:
        force = plan.forced(step.name)
        # a call whose marker matches (outputs there, with their sizes) is not submitted: a
        # rerun of a finished run costs what it costs in-process (``--verify`` submits all:
        # the tasks hash the outputs in parallel)
        done: dict[int | None, dict[str, Any]] = {}
        if not (force or plan.verify):
            for i in indices:
                result = done_result(plan, step, i)
                if result is not None:
                    done[i] = result
        todo = [i for i in indices if i not in done]
        batch = cfg.prefect.parts_per_task
        futures: list[tuple[list[int | None], Any]] = []
        if batch == "all" and step.kind != "reduce":
            if todo:
                name = f"{step.name}-{len(todo)}-calls"
                results = batch_task.with_options(task_run_name=name)(
                    cfg, step.name, todo, plan.verify, force, step.cpus
                )
                done.update(zip(todo, results, strict=True))
        elif batch == 1 or step.kind == "reduce":
            with remote_options(num_cpus=reserved_cpus(step.cpus)):
                futures = [
                    (
                        [i],
                        step_task.with_options(
                            task_run_name=step.name if i is None else f"{step.name}-{i:05d}",
                            **retry,
                        ).submit(cfg, step.name, i, plan.verify, force),
                    )
                    for i in todo
                ]
        else:
            for k in range(0, len(todo), batch):
                calls = todo[k : k + batch]
                name = f"{step.name}-{calls[0]:05d}-{calls[-1]:05d}"
                future = batch_task.with_options(task_run_name=name, **retry).submit(
                    cfg, step.name, calls, plan.verify, force, step.cpus
                )
                futures.append((calls, future))
        for calls, future in futures:
            result = future.result()
            for i, r in zip(calls, result if isinstance(result, list) else [result], strict=True):
                done[i] = r
        return placed(step.name, [done[i] for i in indices])

    def placed(name: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Record which Ray node ran each call of step ``name`` (removed from its result)."""
        placement[name] = []
        for r in results:
            node = r.pop(NODE_KEY, None)
            placement[name].append(node and node["id"])
            if node:
                nodes[node["id"]] = node["ip"]
        return results

    def chained(plan: Plan, steps: list[Step], indices: list[int | None]) -> list[list[dict]]:
        """A chain of map steps: one task per part runs the part through every step of it,
        so a part goes on as soon as its own previous step is done (no wait for the slowest
        part of each step), and Prefect is paid once per part, not once per part and step."""
        names = [s.name for s in steps]
        forces = [plan.forced(n) for n in names]
        done: dict[int | None, list[dict[str, Any]]] = {}
        if not (any(forces) or plan.verify):  # a part done through the whole chain: not sent
            for i in indices:
                found = [done_result(plan, s, i) for s in steps]
                if all(r is not None for r in found):
                    done[i] = [r for r in found if r is not None]
        todo = [i for i in indices if i not in done]
        batch = cfg.prefect.parts_per_task
        label = f"{names[0]}..{names[-1]}"
        cpus = max(s.cpus for s in steps)
        finished: list[tuple[list[int | None], list[dict[str, Any]]]] = []
        if batch == "all":
            if todo:
                name = f"{label}-{len(todo)}-parts"
                results = chain_batch_task.with_options(task_run_name=name)(
                    cfg, names, todo, plan.verify, forces, cpus
                )
                finished.append((todo, results))
        else:
            futures: list[tuple[list[int | None], Any]] = []
            for k in range(0, len(todo), batch):
                calls = todo[k : k + batch]
                if batch == 1:
                    with remote_options(num_cpus=reserved_cpus(cpus)):
                        future = chain_task.with_options(
                            task_run_name=f"{label}-{calls[0]:05d}", **retry
                        ).submit(cfg, names, calls[0], plan.verify, forces)
                else:
                    future = chain_batch_task.with_options(
                        task_run_name=f"{label}-{calls[0]:05d}-{calls[-1]:05d}", **retry
                    ).submit(cfg, names, calls, plan.verify, forces, cpus)
                futures.append((calls, future))
            for calls, future in futures:
                result = future.result()
                finished.append((calls, result if isinstance(result, list) else [result]))
        for calls, results in finished:
            for i, r in zip(calls, results, strict=True):
                node = r.pop(NODE_KEY, None)
                done[i] = [{**x, NODE_KEY: node} for x in r["results"]]
        return [placed(step.name, [done[i][k] for i in indices]) for k, step in enumerate(steps)]

    run_calls, shared, label = submitted, None, share_label or cfg.name
    chains: Any = chained
    if share_steps:  # the shared-step ledger counts calls step by step: no chains
        from curate.ablation import SharedSteps

        shared = SharedSteps(share_steps)
        run_calls, chains = shared.wrap(submitted, label), None

    def publish(sections: list[Any]) -> None:  # the report's sections, computed once
        publish_sections(sections, cfg.run_url, prefix=f"sluice-{cfg.name}")

    report, timings, skipped = execute(
        cfg,
        run_calls,
        log=logger.info,
        verify=verify,
        force_from=force_from,
        run_chain=chains,
        on_sections=publish,
    )
    write_json_atomic({"nodes": nodes, "steps": placement}, RunLayout(cfg.run_url).tasks)
    logger.info("tasks ran on %d Ray node(s): %s", len(nodes), ", ".join(sorted(nodes.values())))
    create_markdown_artifact(
        key=cfg.prefect.artifact_key,
        markdown=f"# Run `{cfg.name}`\n\n## Funnel\n\n{report['funnel_markdown']}\n"
        f"## Mixture\n\n{report['mixture_markdown']}\n## Steps\n\n{_timings_markdown(timings, skipped)}",
        description=f"Sluice funnel and mixture of run {cfg.name}",
    )
    stats = {k: v for k, v in report.items() if not k.endswith("_markdown")}
    return stats | ({"shared_steps": shared.ledger.get(label, {})} if shared else {})


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


def run_curate(
    cfg: PipelineConfig,
    api_url: str | None = None,
    verify: bool = False,
    force_from: str | None = None,
    share_steps: str | None = None,
    share_label: str | None = None,
) -> dict[str, Any]:
    """Run the flow with Ray tasks against the Prefect API ``api_url`` (default: the current
    settings'); returns stats.json as a dict. A local Ray's temp dir is removed afterwards.
    ``share_steps``, ``share_label``: see :func:`curate_flow`."""
    own_temp = None
    try:
        with _api(api_url):
            runner: Any
            if not verify and force_from is None and nothing_to_run(cfg):
                # a finished run: nothing will be submitted, so no Ray is started (~5-10 s)
                print(f"run {cfg.name}: every step is done; Ray is not started", flush=True)
                runner = ThreadPoolTaskRunner(max_workers=1)
            else:
                if cfg.ray.address is None:
                    cpus = cfg.ray.num_cpus or "all"
                    print(f"run {cfg.name}: starting a local Ray ({cpus} CPUs)", flush=True)
                if cfg.ray.address is None and cfg.ray.temp_dir is None:  # short: unix sockets
                    own_temp = tempfile.mkdtemp(prefix="sluice-ray-", dir="/tmp")
                runner = ray_task_runner(cfg, own_temp)
            flow_fn = curate_flow.with_options(task_runner=runner, flow_run_name=cfg.name)
            return flow_fn(cfg, verify, force_from, share_steps, share_label)
    finally:
        if own_temp:
            shutil.rmtree(own_temp, ignore_errors=True)
