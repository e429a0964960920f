"""Timing shared by the benchmarks: best of N runs, CPU and wall seconds."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Best-of-``repeat`` (CPU seconds, wall seconds) and the last result."""
    best_cpu = best_wall = float("inf")
    out = None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return best_cpu, best_wall, out


class Throughput:
    """Docs/s and MB/s per CPU second of named runs over the same ``n`` documents of ``mb`` MB,
    kept in ``results`` and printed as they are recorded."""

    def __init__(self, n: int, mb: float, name_width: int = 44) -> None:
        self.n, self.mb, self.name_width = n, mb, name_width
        self.results: dict[str, dict] = {}

    def record(self, name: str, cpu: float, wall: float, note: str = "") -> None:
        n, mb = self.n, self.mb
        self.results[name] = {
            "docs_per_cpu_s": n / cpu,
            "docs_per_wall_s": n / wall,
            "mb_per_cpu_s": mb / cpu,
            "note": note,
        }
        print(
            f"{name:{self.name_width}s} {n / cpu:10.0f} docs/s/core {mb / cpu:8.2f} MB/s/core "
            f"(wall {n / wall:8.0f} docs/s)  {note}"
        )
