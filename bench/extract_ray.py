"""Extraction on Ray: wall-clock docs/s with 1 worker vs 2 workers on the same parts, same run.

    /work/main/.venv/bin/python -m bench.extract_ray --corpus /work/corpus/full --html 240

The parts are Sluice's own (``plan_parts``), each extracted by ``extract_part`` inside a Ray task
(``num_cpus=1``), exactly as the ``extract`` step of the curate flow runs them, minus Prefect.
Ray is started once per worker count with that many CPUs, and warmed with one part before timing.
Only meaningful on an otherwise idle machine with at least 2 cores: print ``uptime`` beside it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import ray

from curate.readers import ExtractConfig, InputSpec, extract_part, list_inputs, plan_parts
from flows.runtime import quiet_telemetry, ray_init_kwargs


@ray.remote(num_cpus=1)
def _extract(files, cfg) -> int:  # noqa: ANN001
    return extract_part(files, cfg).stats.kept


def run(parts: list, cfg: ExtractConfig, workers: int) -> tuple[float, int]:
    """Seconds to extract ``parts`` on a local Ray with ``workers`` CPUs, and documents kept."""
    kwargs = ray_init_kwargs(None, workers, 200 << 20, None)
    kwargs.pop("address", None)
    ray.init(**kwargs)
    try:
        ray.get([_extract.remote(parts[0], cfg) for _ in range(workers)])  # warm every worker
        start = time.perf_counter()
        kept = sum(ray.get([_extract.remote(p, cfg) for p in parts]))
        return time.perf_counter() - start, kept
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/corpus/full"))
    ap.add_argument("--html", type=int, default=240, help="HTML pages (every k-th, sorted)")
    ap.add_argument("--files-per-part", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    quiet_telemetry()

    files = list_inputs([InputSpec(path=str(args.corpus / "html"), format="html")])
    step = max(1, len(files) // args.html)
    files = files[::step][: args.html]
    parts = plan_parts(files, files_per_part=args.files_per_part, bytes_per_part=1 << 40)
    cfg = ExtractConfig()
    load = os.getloadavg()[0]
    print(f"{len(files)} HTML files in {len(parts)} parts, nproc {os.cpu_count()}, load {load:.2f}")
    best: dict[int, float] = {}
    for _ in range(args.rounds):
        for workers in (1, 2):
            seconds, kept = run(parts, cfg, workers)
            rate = len(files) / seconds
            best[workers] = max(best.get(workers, 0.0), rate)
            print(f"  {workers} worker(s): {seconds:6.1f} s  {rate:6.1f} docs/s  ({kept} kept)")
    print(f"best: 1 worker {best[1]:.1f} docs/s, 2 workers {best[2]:.1f} docs/s, "
          f"speed-up {best[2] / best[1]:.2f}x; load now {os.getloadavg()[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
