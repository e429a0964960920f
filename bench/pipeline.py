"""The whole pipeline against datatrove's: the same WARC of real Debian pages, the same run.

    PYTHONPATH=. .venv-bench/bin/python -m bench.pipeline --html /work/corpus/small/html --pages 1000

Steps on both sides: read the WARC → trafilatura (same options: favor recall, tables, txt, no
dedup; 20 s per-document timeout in a child process) → fastText language ID (the shipped
lid.176.ftz on both sides; datatrove's ``LanguageFilter`` gets the model object directly, so it
downloads nothing; threshold 0.5 = Sluice's ``min_score``) → Gopher repetition + Gopher quality,
C4, FineWeb filters → MinHash signatures (datatrove's ``MinhashDedupSignature``, 14×8 hashes of
5-grams, written to disk; Sluice's ``near_dedup``: 128 permutations of 5-grams, then LSH and
verification). Sluice is ``sluice run --local`` on one part (one core), once with trafilatura and
once with ``extract.html=resiliparse``; its run also does what datatrove's does not: mix, a small
SentencePiece tokenizer, shards (listed as the tail).

Each side runs in its own process; whole-run CPU = user + system seconds of that process and
every child it waited for (``os.wait4``: interpreter start, imports and extraction workers
included), both from bytecode (Sluice's packages are compiled first, as pip compiled
datatrove's). Per step: each framework's own timer (datatrove's ``time_stats``; Sluice's
``timings.json``), which is wall time inside a single-threaded process. MB = the WARC's HTML
payload bytes.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.warc import debian_pages, debian_warc
from curate.filters.langid import default_model_path


def run_datatrove(warc_dir: str, work: str) -> dict:
    """datatrove's pipeline in this process (called in a child); per-step stats."""
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )
    from datatrove.pipeline.readers import WarcReader
    from fasttext.FastText import _FastText

    # the same fastText library is installed as fasttext-numpy2 (the project's pin), not as the
    # fasttext-numpy2-wheel distribution datatrove checks for by name
    LanguageFilter._requires_dependencies = ["fasteners"]
    lang = LanguageFilter(languages=None, language_threshold=0.5)
    lang.model._model = _FastText(default_model_path())  # the shipped model: nothing is downloaded
    steps = [
        WarcReader(warc_dir, glob_pattern="*.warc.gz"),
        Trafilatura(
            favour_precision=False, deduplicate=False, timeout=20, favor_recall=True,
            include_tables=True, output_format="txt", with_metadata=False,
        ),
        lang,
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
        MinhashDedupSignature(output_folder=os.path.join(work, "signatures")),
    ]  # fmt: skip
    # xxhash 4 (pulled in by sluice) no longer encodes str itself as the xxhash 3 datatrove
    # 0.10.1 was written against did: encode here, as bench/dedup.py does
    import xxhash

    steps[-1]._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode("utf-8"))
    # step by step (each step's output materialised), so that each step's CPU is its own:
    # this process's CPU plus that of the children it waited for (the extraction sandbox)
    import resource

    def cpu() -> float:
        me, kids = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    docs: list | None = None
    out = {}
    for step in steps:
        c0 = cpu()
        docs = list(step(iter(docs) if docs is not None else None, 0, 1) or [])
        stats = {
            k: v.total
            for k, v in step.stats.stats.items()
            if not k.startswith(("doc_len", "length"))
        }
        out[step.name] = {"cpu_s": cpu() - c0, "docs_out": len(docs), "stats": stats}
    return out


def sluice_steps(warc: str, extractor: str) -> dict[str, float]:
    """CPU seconds of each Sluice step called in-process on the WARC (called in a child, so
    imports are not counted): extract (this process + its worker), langid, heuristics, the
    near_dedup map (signatures)."""
    from bench.extract import _children_cpu
    from curate.dedup.minhash import NEAR_DEDUP, NearDedupConfig
    from curate.filters.heuristics import HEURISTICS, HeuristicsConfig
    from curate.filters.langid import LANGID, LangIdConfig
    from curate.readers import ExtractConfig, InputSpec, extract_part, list_inputs

    files = list_inputs([InputSpec(path=warc, format="warc", domain="web")])
    cfg = ExtractConfig.model_validate({"html": extractor, "timeout_s": 20})
    extract_part(
        list_inputs(
            [InputSpec(path=str(Path(__file__).parent.parent / "data/sample/html/python3.11-doc"))]
        ),
        cfg,
    )  # warm the worker
    out: dict[str, float] = {}

    def step(name: str, fn):  # noqa: ANN001, ANN202
        c0, k0 = time.process_time(), _children_cpu()
        result = fn()
        out[name] = time.process_time() - c0 + _children_cpu() - k0
        return result

    docs = step("extract", lambda: extract_part(files, cfg)).kept
    docs = step("langid", lambda: LANGID.run(docs, LangIdConfig())).kept
    heur = HeuristicsConfig.model_validate(sluice_config("", "", "")["stages"][1]["options"])
    docs = step("heuristics", lambda: HEURISTICS.run(docs, heur)).kept
    step("near_dedup.map (signatures)", lambda: NEAR_DEDUP.map(docs, NearDedupConfig()))
    return out


def sluice_config(warc: str, run_dir: str, extractor: str) -> dict:
    return {
        "name": f"bench-{extractor}",
        "run_dir": run_dir,
        "inputs": [{"path": warc, "format": "warc", "domain": "web"}],
        "extract": {"html": extractor, "timeout_s": 20},
        "parts": {"files_per_part": 1, "bytes_per_part": 1 << 30},
        "stages": [
            {"name": "langid", "options": {}},
            {
                "name": "heuristics",
                "options": {
                    "c4": {"domains": ["web"], "rewrite": False},
                    "fineweb": {"domains": ["web"], "max_dup_chars": 0.1},
                },
            },
            {"name": "near_dedup", "options": {}},
        ],
        "mix": {"weights": {"web": 1}, "total_tokens": 200000, "max_epochs": 1, "seed": 0},
        "tokenizer": {"vocab_size": 8000, "sample_bytes": 1000000, "num_threads": 1},
        "shards": {"seq_len": 128, "sequences_per_file": 2048, "val_fraction": 0.05},
    }


DT_STEPS = {  # datatrove step name (without its emoji) → the common step
    "Warc": "read WARC",
    "Trafilatura": "extract",
    "Language ID": "langid",
    "Gopher Repetition": "heuristics",
    "Gopher Quality": "heuristics",
    "C4 Quality": "heuristics",
    "FineWeb Quality": "heuristics",
    "MinHash stage 1": "minhash signatures",
}
SLUICE_STEPS = {
    "extract": "extract",
    "langid": "langid",
    "heuristics": "heuristics",
    "near_dedup.map (signatures)": "minhash signatures",
}


def print_steps(datatrove: dict, sluice: dict[str, dict[str, float]], n: int) -> None:
    """Per-step CPU seconds and documents in per CPU second, side by side."""
    table: dict[str, dict[str, list[float]]] = {}
    docs_in = n
    for name, d in datatrove.items():
        common = DT_STEPS[name.split(" ", 1)[1]]
        cell = table.setdefault(common, {}).setdefault("datatrove", [0.0, docs_in])
        cell[0] += d["cpu_s"]
        docs_in = d["docs_out"]
    for extractor, steps in sluice.items():
        for name, cpu in steps.items():
            table.setdefault(SLUICE_STEPS[name], {})[extractor] = [cpu, float("nan")]
    print("\nPer step, CPU seconds (docs/s/core on the documents entering the step; Sluice's"
          " steps called in-process on the same WARC, extract including the WARC read):\n")  # fmt: skip
    print("| step | datatrove | sluice (trafilatura) | sluice (resiliparse) |")
    print("| --- | ---: | ---: | ---: |")
    for step, cells in table.items():
        out = []
        for side in ("datatrove", "trafilatura", "resiliparse"):
            cpu, k = cells.get(side, [float("nan"), float("nan")])
            rate = f" ({k / cpu:,.0f}/s)" if k == k and cpu else ""
            out.append("" if cpu != cpu else f"{cpu:.2f}{rate}")
        print(f"| {step} | " + " | ".join(out) + " |")


def timed_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(CPU seconds of the child and its waited-for children, wall seconds, stdout)."""
    w0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if proc.returncode:
        raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}: {text[-3000:]}")
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - w0, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=Path("/work/corpus/small/html"))
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    ap.add_argument(
        "--extractors",
        nargs="+",
        choices=["trafilatura", "resiliparse"],
        default=["trafilatura", "resiliparse"],
        help="Sluice's runs (datatrove always runs trafilatura)",
    )
    ap.add_argument("--steps-child", nargs=2, metavar=("WARC", "EXTRACTOR"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--datatrove-child", nargs=2, metavar=("WARC_DIR", "WORK"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.steps_child:
        print("RESULT " + json.dumps(sluice_steps(*args.steps_child)))
        return
    if args.datatrove_child:
        print("RESULT " + json.dumps(run_datatrove(*args.datatrove_child)))
        return

    work = str(args.keep) if args.keep else tempfile.mkdtemp(prefix="sluice-bench-pipeline-")
    os.makedirs(os.path.join(work, "warc"), exist_ok=True)
    pages = debian_pages(args.html, args.pages)
    warc = os.path.join(work, "warc", "debian.warc.gz")
    Path(warc).write_bytes(debian_warc(pages))
    mb = sum(p.stat().st_size for p in pages) / 1e6
    n = len(pages)
    env = dict(os.environ, DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(Path(__file__).resolve().parents[1]))  # fmt: skip
    print(f"# {n} pages, {mb:.1f} MB HTML, WARC {os.path.getsize(warc) / 1e6:.1f} MB (gzip); "
          f"nproc {os.cpu_count()}; load {os.getloadavg()}")  # fmt: skip

    # both sides run from bytecode: pip compiled datatrove's modules when it installed them;
    # Sluice's editable checkout compiles on first import, unless PYTHONDONTWRITEBYTECODE is set
    for package in ("curate", "flows", "train"):
        compileall.compile_dir(str(Path(__file__).resolve().parents[1] / package), quiet=1)

    rows = []
    cpu, wall, text = timed_child(
        [sys.executable, "-m", "bench.pipeline", "--datatrove-child", os.path.dirname(warc),
         os.path.join(work, "datatrove")], env)  # fmt: skip
    steps = json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[7:])
    rows.append(("datatrove 0.10.1 (trafilatura)", cpu, wall, steps))
    print(f"datatrove: CPU {cpu:.1f} s, wall {wall:.1f} s", flush=True)

    sluice = str(Path(sys.executable).parent / "sluice")
    for extractor in args.extractors:
        run_dir = os.path.join(work, f"sluice-{extractor}")
        cfg_path = os.path.join(work, f"{extractor}.yaml")
        Path(cfg_path).write_text(yaml.safe_dump(sluice_config(warc, run_dir, extractor)))
        cpu, wall, _ = timed_child([sluice, "run", "--local", "--config", cfg_path], env)
        timings = json.loads(Path(run_dir, "timings.json").read_text())
        stats = json.loads(Path(run_dir, "stats.json").read_text())["stages"]
        rows.append(
            (f"sluice run --local ({extractor})", cpu, wall, {"timings": timings, "stages": stats})
        )
        print(f"sluice {extractor}: CPU {cpu:.1f} s, wall {wall:.1f} s", flush=True)

    in_process: dict[str, dict[str, float]] = {}
    for extractor in args.extractors:
        cpu, wall, text = timed_child(
            [sys.executable, "-m", "bench.pipeline", "--steps-child", warc, extractor], env
        )
        steps = json.loads(next(x for x in text.splitlines() if x.startswith("RESULT "))[7:])
        in_process[extractor] = steps
        print(f"sluice steps in-process, {extractor} (CPU s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
              + f"; whole child {cpu:.2f}", flush=True)  # fmt: skip

    print(f"\n# load after: {os.getloadavg()}\n")
    base = n / rows[0][1]
    print("| run | CPU s (whole run) | docs/s/core | MB/s/core | vs datatrove | wall s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, cpu, wall, _ in rows:
        print(
            f"| {name} | {cpu:.1f} | {n / cpu:.1f} | {mb / cpu:.2f} | {n / cpu / base:.2f}× | {wall:.1f} |"
        )
    print_steps(rows[0][3], in_process, n)
    print("\nDetails (datatrove: CPU per step and its counters; Sluice: its run's timings.json,"
          " wall seconds, and stats.json):\n")  # fmt: skip
    print(json.dumps([(name, detail) for name, _, _, detail in rows], indent=1))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
