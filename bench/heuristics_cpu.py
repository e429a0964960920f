"""CPU time of the ``heuristics`` stage (all four families, default options) on data/sample's
rst, prose and fortune documents: a same-machine check of one code version against another
(run it from each checkout; no peer library needed).

    PYTHONPATH=. python -m bench.heuristics_cpu
"""

from __future__ import annotations

import time

from curate.filters.heuristics import HEURISTICS, HeuristicsConfig
from tests.shards_sample import sample_docs


def main() -> None:
    table = sample_docs(("rst", "prose", "fortune"))
    cfg = HeuristicsConfig()
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        HEURISTICS.run(table, cfg)
        best = min(best, time.process_time() - start)
    mb = sum(len(t.encode()) for t in table["text"].to_pylist()) / 1e6
    print(f"{table.num_rows} docs {mb:.2f} MB: best CPU {best:.2f} s = "
          f"{table.num_rows / best:.0f} docs/s/core, {mb / best:.2f} MB/s/core")  # fmt: skip


if __name__ == "__main__":
    main()
