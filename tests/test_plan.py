"""The plan (curate/plan.py) on the small real job: a plugin stage with its own config and a
fit step runs without any executor knowing it; --dry-run says what is done and what will run,
and why; options that name data fail before anything runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate import runner
from curate.config import ConfigError, PipelineConfig
from curate.plan import build_plan, describe
from tests.golden import REPO_ROOT as ROOT
from tests.golden import file_hash, golden_config, hash_run

PLUGIN = "tests.plugin_stage"


def plugin_config(tmp_path: Path, name: str = "plugin"):
    """The golden job with the test plugin stage (its fit reads extract) after langid."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = golden_config(tmp_path, name).model_dump(mode="json")
    data["plugins"] = [PLUGIN]
    data["stages"].insert(1, {"name": "short_for_domain", "options": {"fraction": 0.1}})
    return PipelineConfig.model_validate(data)


def test_a_plugin_stage_with_a_fit_runs_in_process(tmp_path):
    cfg = plugin_config(tmp_path)
    names = [s.name for s in build_plan(cfg).steps]
    # each fit right after the stage it reads (extract), in the order of the stages
    assert names[:4] == ["extract", "short_for_domain.medians", "quality.train", "langid"]
    stats = runner.run_pipeline(cfg)
    run = tmp_path / "runs" / "plugin"
    medians = json.loads((run / "short_for_domain" / "medians.json").read_text())
    assert set(medians) == {"code", "meta", "rst"}
    s = stats["stages"]["short_for_domain"]
    assert s["removed"].get("short_for_domain", 0) > 0
    assert s["docs_in"] == stats["stages"]["langid"]["kept"]
    runner.run_pipeline(cfg)  # a rerun does nothing
    skipped = json.loads((run / "timings.json").read_text())["skipped_parts"]
    assert skipped["short_for_domain"] == skipped["extract"] > 0


def test_dry_run_says_what_is_done_and_what_will_run(tmp_path):
    cfg = golden_config(tmp_path)
    fresh = describe(cfg)
    assert "extract" in fresh and "missing" in fresh and " done " not in fresh
    assert not (tmp_path / "runs" / "golden").exists()  # a dry run writes nothing
    runner.run_pipeline(cfg)
    lines = describe(cfg).splitlines()[1:]
    assert lines and all(" done " in line for line in lines), lines
    data = cfg.model_dump(mode="json")
    k = [s["name"] for s in data["stages"]].index("toxicity")
    data["stages"][k]["options"] = {"threshold": 0.5}
    changed = {
        line.split()[0]: line
        for line in describe(PipelineConfig.model_validate(data)).splitlines()[1:]
    }
    assert " done " in changed["pii"] or "after toxicity" in changed["pii"]
    assert "config or code changed" in changed["toxicity"]
    assert " done " in changed["langid"] and "will run" in changed["shards"]


def test_options_that_name_data_fail_before_anything_runs(tmp_path):
    data = golden_config(tmp_path).model_dump(mode="json")
    q = [s["name"] for s in data["stages"]].index("quality")
    d = [s["name"] for s in data["stages"]].index("decontam")
    data["stages"][q]["options"]["train"]["positive_sources"] = ["*/no-such-doc/*"]
    data["stages"][d]["options"]["eval_files"] = ["data/eval/no-such-file.txt"]
    cfg = PipelineConfig.model_validate(data)
    with pytest.raises(ConfigError) as e:
        runner.run_pipeline(cfg)
    message = str(e.value)
    assert f"stages[{q}].options.train.positive_sources" in message and "no-such-doc" in message
    assert f"stages[{d}].options.eval_files: not found: data/eval/no-such-file.txt" in message
    assert not (tmp_path / "runs" / "golden" / "extract").exists()  # nothing ran


# --- what a rerun trusts: outputs checked, temporaries cleaned, one run per directory -------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The golden job, run once; tests copy its run directory."""
    tmp = tmp_path_factory.mktemp("plan")
    cfg = golden_config(tmp)
    runner.run_pipeline(cfg)
    return {"run": tmp / "runs" / "golden", "hashes": hash_run(tmp / "runs" / "golden")}


def _copy(finished, tmp_path) -> tuple[Path, PipelineConfig]:
    cfg = golden_config(tmp_path)
    shutil.copytree(finished["run"], tmp_path / "runs" / "golden")
    return tmp_path / "runs" / "golden", cfg


def _flip_a_byte(path: Path, at: int = 64) -> None:
    """One byte of a data page (the footer, which counts rows, stays readable)."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_part_deleted_under_its_marker_is_recomputed(finished, tmp_path):
    run, cfg = _copy(finished, tmp_path)
    (run / "toxicity" / "part-00001.parquet").unlink()
    (run / "shards" / "train" / "shard-00000.arrow").unlink()
    (run / "tokenizer" / "tokenizer.model").write_bytes(b"truncated")
    runner.run_pipeline(cfg)
    skipped = json.loads((run / "timings.json").read_text())["skipped_parts"]
    assert skipped["toxicity"] == skipped["extract"] - 1  # that part only
    assert hash_run(run) == finished["hashes"]


def test_verify_recomputes_a_corrupt_part_and_a_corrupt_input_is_never_carried_on(
    finished, tmp_path
):
    run, cfg = _copy(finished, tmp_path)
    _flip_a_byte(run / "pii" / "part-00002.parquet")  # same size: only a hash sees it
    runner.run_pipeline(cfg, verify=True)
    assert hash_run(run) == finished["hashes"]
    # without --verify the skip is cheap, but a step that computes checks its inputs fully:
    # the mix re-runs here (new seed) and must not read the corrupt final part
    _flip_a_byte(run / "decontam" / "part-00001.parquet")
    data = cfg.model_dump(mode="json")
    data["mix"]["seed"] = 1
    runner.run_pipeline(PipelineConfig.model_validate(data))
    assert (
        file_hash(run / "decontam" / "part-00001.parquet", run)
        == (finished["hashes"]["decontam/part-00001.parquet"])
    )
    markers = [json.loads(p.read_text()) for p in sorted(run.rglob("*done.json"))]
    assert markers and all(m["outputs"] for m in markers)
    shards = json.loads((run / "shards" / "done.json").read_text())
    assert "shards/manifest.json" in shards["outputs"] and shards["output"]


def test_leftover_temporaries_are_removed(finished, tmp_path):
    run, cfg = _copy(finished, tmp_path)
    left = [
        run / "extract" / f"part-00000.parquet.tmp-{'a' * 32}",
        run / f"shards.tmp-{'b' * 32}" / "train" / "shard-00000.arrow",
    ]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half written")
    runner.run_pipeline(cfg)
    assert not any(p.exists() for p in left) and not left[1].parent.parent.exists()
    assert hash_run(run) == finished["hashes"]


def test_parts_are_parsed_once_per_content_and_again_when_the_file_changes(finished, tmp_path):
    """A Ray worker builds the plan for every call: the parsed parts.json is reused while its
    bytes are the same, and a rewritten one (a re-planned run) is parsed anew."""
    run, cfg = _copy(finished, tmp_path)
    first, second = build_plan(cfg).parts, build_plan(cfg).parts
    assert first == second and len(first) > 1
    assert all(a is b for a, b in zip(first[0], second[0], strict=True))  # parsed once
    first[0].clear()  # a caller's list is its own: the cached parts stay whole
    assert build_plan(cfg).parts == second
    data = json.loads((run / "parts.json").read_text())
    data["parts"] = data["parts"][:1]
    (run / "parts.json").write_text(json.dumps(data))
    assert build_plan(cfg).parts == second[:1]


def test_a_run_directory_is_owned_by_one_run(finished, tmp_path):
    run, cfg = _copy(finished, tmp_path)
    lock = run / "run.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": 0}))
    with pytest.raises(runner.RunLocked, match=f"in use by pid {os.getpid()} on host"):
        runner.run_pipeline(cfg)
    assert lock.exists()  # the other run's lock stays
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": 0}))
    runner.run_pipeline(cfg)  # a dead run's lock is taken over
    assert not lock.exists()  # and released at the end
    assert hash_run(run) == finished["hashes"]


def test_two_runs_at_once_on_one_directory_one_is_refused(tmp_path):
    cfg = golden_config(tmp_path)
    command = [sys.executable, "-m", "flows.cli", "run", "--local", "--config"]
    path = str(tmp_path / "golden.yaml")
    first = subprocess.Popen([*command, path], cwd=ROOT, stdout=subprocess.DEVNULL)
    lock = Path(cfg.run_url) / "run.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run([*command, path], cwd=ROOT, capture_output=True, text=True)
    assert first.wait(timeout=600) == 0
    assert second.returncode != 0 and "is in use by pid" in second.stderr, second.stderr[-2000:]


def test_consecutive_map_steps_form_chains_and_share_their_wall_time(tmp_path):
    """The flow runs consecutive map steps as one chain per part: every chain is a run of map
    steps, every other step stands alone, and the order of the plan is kept; a chain's wall
    seconds are shared out by the seconds its computed calls took."""
    plan = build_plan(golden_config(tmp_path))
    groups = runner.step_chains(plan)
    assert [s.name for g in groups for s in g] == [s.name for s in plan.steps]
    for g in groups:
        assert len(g) == 1 or all(s.kind == "map" for s in g)
    for a, b in zip(groups, groups[1:], strict=False):
        assert not (a[-1].kind == "map" and b[0].kind == "map")  # chains are maximal
    longest = max(groups, key=len)
    assert [s.name for s in longest][:2] == ["langid", "heuristics"]  # after the quality fit
    took = runner.CALL_SECONDS
    results = [[{took: 3.0}, {took: 1.0, "skipped": True}], [{took: 1.0}] * 2]
    assert runner.chain_timings(10.0, longest[:2], results) == [6.0, 4.0]
    assert runner.chain_timings(4.0, longest[:2], [[{"skipped": True}]] * 2) == [2.0, 2.0]


def test_steps_that_run_threads_say_how_many_cores_they_use(tmp_path):
    """What an executor on a cluster reserves per call: the near-dedup reduce its containment
    threads (one core without containment), the tokenizer SentencePiece's threads, encode its
    encode_threads; every other step one core."""
    from curate.dedup.containment import MAX_THREADS

    cfg = golden_config(tmp_path)
    data = cfg.model_dump(mode="json")
    near = next(s for s in data["stages"] if s["name"] == "near_dedup")
    near.setdefault("options", {})["containment"] = 0.8
    data["tokenizer"]["num_threads"] = 3
    data["shards"]["encode_threads"] = 2
    cpus = {s.name: s.cpus for s in build_plan(PipelineConfig.model_validate(data)).steps}
    assert cpus.pop("near_dedup.reduce") == MAX_THREADS
    assert cpus.pop("tokenizer") == 3 and cpus.pop("encode") == 2
    assert set(cpus.values()) == {1}, cpus
    near["options"]["containment"] = None
    plan = build_plan(PipelineConfig.model_validate(data))
    assert plan.step("near_dedup.reduce").cpus == 1


def test_peak_rss_is_the_blocks_own():
    """``curate.memory.peak_rss``: a block that allocates 300 MB peaks 300 MB above one that
    does not, run after it in the same process (the peak is reset before each block)."""
    import numpy as np

    from curate.memory import peak_rss

    with peak_rss() as big:
        block = np.ones(300 * 2**20 // 8)
        del block
    with peak_rss() as small:
        np.ones(1000).sum()
    assert big.since_reset and small.since_reset
    assert big.mib is not None and small.mib is not None
    assert big.mib - small.mib > 250


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(PR_SET_THP_DISABLE) is Linux's")
def test_transparent_huge_pages_off_for_the_process_and_its_children():
    """``curate.memory.disable_transparent_huge_pages``: the process and a process it starts
    (an extraction worker, a local Ray worker) run without THP; ``SLUICE_KEEP_THP=1`` keeps
    them."""
    script = (
        "import ctypes, subprocess, sys\n"
        "from curate.memory import disable_transparent_huge_pages\n"
        "get = 'import ctypes; print(ctypes.CDLL(None).prctl(42, 0, 0, 0, 0))'\n"
        "ctypes.CDLL(None).prctl(41, 0, 0, 0, 0)  # pytest may have inherited it off\n"
        "before = ctypes.CDLL(None).prctl(42, 0, 0, 0, 0)\n"
        "off = disable_transparent_huge_pages()\n"
        "me = ctypes.CDLL(None).prctl(42, 0, 0, 0, 0)\n"
        "child = subprocess.run([sys.executable, '-c', get], capture_output=True, text=True)\n"
        "print(before, off, me, child.stdout.strip())\n"
    )

    def run(keep: str) -> list[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SLUICE_KEEP_THP": keep}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.split()

    assert run("") == ["0", "True", "1", "1"]
    assert run("1") == ["0", "False", "0", "0"]


def test_freed_arrow_memory_goes_back_only_above_the_threshold():
    """``curate.memory.release_unused``: Arrow memory a call freed (mimalloc keeps it) stays
    with a process under ``above_mib`` (the next call reuses it) and goes back to the OS over
    it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from curate.memory import current_rss_mib, release_unused

    def rss_after_freeing_arrow_memory(above_mib: float) -> tuple[float, float]:
        values = pa.array(np.arange(40 * 2**20 // 8, dtype=np.int64))  # numpy's memory
        column = pc.add(values, 1)  # 40 MiB from Arrow's pool
        del column, values
        before = current_rss_mib()
        release_unused(above_mib)
        after = current_rss_mib()
        assert before is not None and after is not None
        return before, after

    before, after = rss_after_freeing_arrow_memory(above_mib=1e9)
    assert after > before - 5  # kept
    before, after = rss_after_freeing_arrow_memory(above_mib=0)
    assert after < before - 20  # given back
