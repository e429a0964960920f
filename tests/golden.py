"""Golden output hashes of a small real run: the redesign's (and any refactor's) byte-identity
check.

``python -m tests.golden --update`` runs the small job (:func:`golden_config`) in-process and
rewrites ``tests/golden/small.json``: the sha256 of every output file of the run. Filter changes
legitimately change it: regenerate it then (the diff of the file shows which outputs moved).
``python -m tests.golden --hash RUN_DIR`` prints the hashes of any run directory.

What is compared: every file, except timing files (``timings.json``, ``tasks.json``: which Ray
node ran what, and the HTML report, which shows timings); JSON files are compared without their
timing keys (``seconds``, ``*_seconds``) and the measured peak memory (``peak_rss_mib``),
without ``skipped`` (whether this call did the work)
and with the run directory and the repository replaced by placeholders; done markers without
their ``config_hash`` (it hashes the step's source code, which any refactor changes) and
``input_fingerprint`` (raw files' mtimes), so the list is the same in any checkout and for any
run directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "small.json"
TIMING_FILES = {"timings.json", "tasks.json", "report.html", "run.lock"}


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: _strip(v)
            for k, v in obj.items()
            if k not in ("seconds", "skipped", "peak_rss_mib") and not k.endswith("_seconds")
        }
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def file_hash(path: Path, run: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".json":
        text = data.decode().replace(str(run.resolve()), "<run>").replace(str(run), "<run>")
        text = text.replace(str(REPO_ROOT), "<repo>")
        obj = _strip(json.loads(text))
        # every marker: part-N.done.json, state.done.json, tokenizer/done.json, shards/done.json
        if path.name.endswith("done.json") and isinstance(obj, dict):
            obj.pop("config_hash", None)  # holds the hash of the step's code: refactors move it
            # extract's input fingerprint hashes the raw files' paths and mtimes (a fresh clone
            # has new ones); every later step's is the hash of outputs compared here anyway
            obj.pop("input_fingerprint", None)
        data = json.dumps(obj, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def hash_run(run: Path) -> dict[str, str]:
    """sha256 of every output file of a run (relative path → hash), timing files aside."""
    return {
        str(p.relative_to(run)): file_hash(p, run)
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name not in TIMING_FILES
    }


def golden_config(tmp: Path, name: str = "golden", executor_options: bool = False):
    """The small job: code, rst and Debian changelogs through langid, heuristics, the run's own
    quality model (a fit step), toxicity, pii, exact and near dedup and decontam; seconds."""
    import flows.settings  # noqa: F401 - the ray/prefect sections, as `sluice run` resolves them
    from curate.config import load_config

    path = tmp / f"{name}.yaml"
    path.write_text(
        f"""name: {name}
run_dir: {tmp}/runs/{name}
inputs:
  - {{path: data/sample/code, base_dir: {REPO_ROOT}, format: code, domain: code}}
  - {{path: data/sample/rst, base_dir: {REPO_ROOT}, format: text, domain: rst}}
  - {{path: data/sample/meta, base_dir: {REPO_ROOT}, format: text, domain: meta}}
parts: {{files_per_part: 40, bytes_per_part: 3000000}}
stages:
  - {{name: langid, options: {{}}}}
  - {{name: heuristics, options: {{skip_domains: [code]}}}}
  - name: quality
    options:
      skip_domains: [code]
      train: {{positive_sources: ["*/llvm-16-doc/*", "*/llvm-15-doc/*"], negative_domains: [meta]}}
  - {{name: toxicity, options: {{}}}}
  - {{name: pii, options: {{}}}}
  - {{name: exact_dedup, options: {{}}}}
  - {{name: near_dedup, options: {{}}}}
  - {{name: decontam, options: {{eval_files: [data/eval/debian-reference-ch01.txt]}}}}
mix: {{weights: {{rst: 1, code: 1, meta: 2}}, total_tokens: 400000, max_epochs: 3}}
tokenizer: {{vocab_size: 800, sample_bytes: 300000, num_threads: 1}}
shards: {{seq_len: 128, sequences_per_file: 4096, val_fraction: 0.05}}
ray: {{num_cpus: 1, object_store_memory: 100000000}}
prefect: {{task_retries: 0, start_server: false}}
"""
    )
    return load_config(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite tests/golden/small.json")
    parser.add_argument("--hash", metavar="RUN_DIR", help="print the hashes of a run directory")
    parser.add_argument(
        "--flow",
        metavar="OUT",
        help="run the small job as the Prefect flow on a local Ray (a private server) and "
        "write its hashes to OUT",
    )
    args = parser.parse_args(argv)
    if args.hash:
        json.dump(hash_run(Path(args.hash)), sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    import tempfile

    if args.flow:
        from flows.curate import run_curate
        from tests.prefect_server import local_prefect_server

        with tempfile.TemporaryDirectory(prefix="sluice-golden-") as tmp:
            cfg = golden_config(Path(tmp))
            with local_prefect_server(Path(tmp)) as server:
                run_curate(cfg, server.url)
            Path(args.flow).write_text(json.dumps(hash_run(Path(cfg.run_url)), indent=1) + "\n")
        return 0
    if not args.update:
        parser.error("give --update, --flow OUT or --hash RUN_DIR")

    from curate.runner import run_pipeline

    with tempfile.TemporaryDirectory(prefix="sluice-golden-") as tmp:
        cfg = golden_config(Path(tmp))
        run_pipeline(cfg)
        hashes = hash_run(Path(cfg.run_url))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{GOLDEN}: {len(hashes)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
