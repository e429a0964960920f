"""Peak memory of the extract stage on a .jsonl.gz bomb (issue 16.6), one fresh interpreter per
case under ``/usr/bin/time -v``: ``single`` (one gzip member inflating to 1 GiB: refused from its
declared size) and ``liar`` (64 members of 16 MiB: the trailer understates the size, so the
streaming caps do the work). Default ExtractConfig (max_file_bytes = max_part_bytes = 256 MiB).

    python bench/jsonl_bomb.py [--out /tmp/jsonl-bomb]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bad_inputs import jsonl_gzip_bomb  # noqa: E402

EXTRACT = (
    "import sys; from curate.readers import InputSpec, extract_part, list_inputs; "
    "r = extract_part(list_inputs([InputSpec(path=sys.argv[1])])); "
    "print(r.stats.docs_in, r.stats.kept, r.stats.quarantined)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/jsonl-bomb")
    out = Path(parser.parse_args().out)
    for case in ("single", "liar"):
        (out / case).mkdir(parents=True, exist_ok=True)
    (out / "single" / "bomb.jsonl.gz").write_bytes(jsonl_gzip_bomb())
    (out / "liar" / "bomb.jsonl.gz").write_bytes(jsonl_gzip_bomb(16 << 20) * 64)
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    for case in ("single", "liar"):
        path = out / case
        proc = subprocess.run(
            ["/usr/bin/time", "-v", sys.executable, "-c", EXTRACT, str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", proc.stderr)
        size = (path / "bomb.jsonl.gz").stat().st_size
        print(
            f"{case}: {size / 1e6:.1f} MB gz -> docs_in/kept/quarantined {proc.stdout.strip()}, "
            f"peak RSS {int(rss.group(1)) / 1024:.0f} MiB, wall {wall.group(1)}"
        )


if __name__ == "__main__":
    main()
