"""The bad-input corpus (issues 9.1 and 16): listing and extraction complete, every bad file
gets its expected reason, every skipped entry is reported with its reason, nothing hangs, and
memory stays bounded.

Memory bound: the extraction runs in a fresh interpreter so that its peak RSS is its own. The
parent process never holds more than one raw document (``max_bytes`` = 32 MiB, checked before
reading, and gzip streams are inflated at most to that) plus the part's tables; the 2,000-page
PDF, the 100k-deep HTML and the WARC payloads are parsed in the worker process. Measured on
this machine: parent 182 MiB, worker 137 MiB (3.7 s). Asserted: parent < 400 MiB, worker < 512 MiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bad_inputs import EXPECTED_SKIPS, KEPT_RECORDS, make_bad_corpus

ROOT = Path(__file__).resolve().parent.parent
PARENT_RSS_LIMIT_MIB = 400
WORKER_RSS_LIMIT_MIB = 512

_SCRIPT = """
import json, resource, sys, time
from curate.readers import InputSpec, extract_part, list_inputs, plan_parts, skipped_report
from curate.readers import worker
from curate.storage import fingerprint
start = time.monotonic()
skipped = []
files = list_inputs([InputSpec(path=sys.argv[1])], skipped=skipped)
fingerprint([f.url for f in files])  # a file name that is not UTF-8 must not crash it
(part,) = plan_parts(files, files_per_part=1000, bytes_per_part=1 << 40)
result = extract_part(part)
seconds = time.monotonic() - start
worker.shutdown()  # waits for the workers, so RUSAGE_CHILDREN includes them
rows = result.quarantine.to_pylist() + result.removed.to_pylist()
print(json.dumps({
    "reasons": [[r["source"], r["offset"], r["reason"]] for r in rows],
    "kept": [[r["source"], r["offset"]] for r in result.kept.to_pylist()],
    "stats": result.stats.to_dict(),
    "counters": result.counters,
    "skipped": skipped_report(skipped),
    "seconds": seconds,
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would count the pytest process
    # this interpreter was forked from (hundreds of MiB once the whole suite is imported)
    "parent_rss_mib": next(
        int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")
    ) / 1024,
    "worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""


@pytest.mark.timeout(300)
def test_bad_corpus(tmp_path: Path) -> None:
    expected = make_bad_corpus(tmp_path / "bad")
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "bad")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    stats = out["stats"]
    removed, quarantined = sum(stats["removed"].values()), sum(stats["quarantined"].values())
    assert stats["docs_in"] == stats["kept"] + removed + quarantined

    got: dict[str, list[str]] = {}
    for source, _, reason in out["reasons"]:
        got.setdefault(source, []).append(reason)
    for path, reason in expected.items():
        assert got.get(path) == [reason], (Path(path).name, got.get(path), reason)
    assert set(got) == set(expected)
    # WARCs and JSONL files keep their good records next to the bad one; links are followed
    kept = {(Path(s).name, o) for s, o in out["kept"]}
    assert kept == KEPT_RECORDS
    bad = tmp_path / "bad"
    skips = {str(Path(s["path"]).relative_to(bad)): s["reason"] for s in out["skipped"]}
    assert skips == EXPECTED_SKIPS
    assert out["counters"]["pdf_empty_pages"] == 2000

    print(
        f"bad corpus: {len(expected)} files in {out['seconds']:.1f} s, peak RSS parent "
        f"{out['parent_rss_mib']:.0f} MiB, worker {out['worker_rss_mib']:.0f} MiB"
    )
    assert out["parent_rss_mib"] < PARENT_RSS_LIMIT_MIB
    assert 0 < out["worker_rss_mib"] < WORKER_RSS_LIMIT_MIB
