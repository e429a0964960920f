"""What one task costs to orchestrate: N busy tasks of 0.5 CPU s each on a local Ray with 2 CPUs,
as plain Ray tasks and as Prefect tasks on prefect-ray's ``RayTaskRunner`` (what
``prefect.parts_per_task: 1`` does for every part). Reports wall seconds and the CPU seconds of
the whole machine (``/proc/stat``: Ray's processes, the workers and the Prefect server all
count), so run it on an otherwise quiet machine, with a Prefect server up:

    PREFECT_API_URL=http://127.0.0.1:4300/api PYTHONPATH=. python -m bench.task_overhead --tasks 60
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from flows import runtime  # noqa: F401 - telemetry off before prefect and ray load

BUSY_S = 0.5


def busy(i: int) -> int:
    """Spin for ``BUSY_S`` of this process's CPU time."""
    start = time.process_time()
    while time.process_time() - start < BUSY_S:
        pass
    return i


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def measure(label: str, run: Callable[[], object]) -> None:
    cpu, wall = machine_cpu_s(), time.perf_counter()
    run()
    wall, cpu = time.perf_counter() - wall, machine_cpu_s() - cpu
    print(f"{label}: wall {wall:.2f} s, machine CPU {cpu:.2f} s", flush=True)


def plain_ray(n: int) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    task = ray.remote(num_cpus=1)(busy)
    ray.get([task.remote(-1), task.remote(-2)])  # both workers started
    measure(f"{n} plain Ray tasks", lambda: ray.get([task.remote(i) for i in range(n)]))
    ray.shutdown()


def prefect_on_ray(n: int) -> None:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect_ray import RayTaskRunner

    busy_task = task(busy, cache_policy=NO_CACHE, persist_result=False)
    runner = RayTaskRunner(init_kwargs={"num_cpus": 2, "include_dashboard": False})

    @flow(task_runner=runner)
    def tasks() -> None:
        [f.result() for f in (busy_task.submit(-1), busy_task.submit(-2))]
        measure(
            f"{n} Prefect tasks on Ray",
            lambda: [f.result() for f in [busy_task.submit(i) for i in range(n)]],
        )

    tasks()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.tasks} tasks x {BUSY_S} CPU s = {args.tasks * BUSY_S:.0f} CPU s of work")
    for _ in range(args.rounds):
        plain_ray(args.tasks)
        prefect_on_ray(args.tasks)


if __name__ == "__main__":
    main()
