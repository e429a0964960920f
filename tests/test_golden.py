"""The small real job gives the recorded bytes (tests/golden/small.json): a refactor of the
runner, the flow or the run layout must not change what a run writes. A filter change that
moves outputs on purpose regenerates the list: ``python -m tests.golden --update``."""

from __future__ import annotations

import json

from curate.runner import run_pipeline
from tests.golden import GOLDEN, golden_config, hash_run


def test_small_run_writes_the_golden_bytes(tmp_path):
    cfg = golden_config(tmp_path)
    run_pipeline(cfg)
    got = hash_run(tmp_path / "runs" / "golden")
    want = json.loads(GOLDEN.read_text())
    changed = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    assert not changed, (
        f"{len(changed)} output files differ from {GOLDEN.name} (first: {changed[:8]}); if the "
        "change is intended, regenerate with `python -m tests.golden --update`"
    )
