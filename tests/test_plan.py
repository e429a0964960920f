"""The plan (curate/plan.py) on the small real job: a plugin stage with its own config and a
fit step runs without any executor knowing it; --dry-run says what is done and what will run,
and why; options that name data fail before anything runs."""

from __future__ import annotations

import json

import pytest

from curate import runner
from curate.config import ConfigError, PipelineConfig
from curate.plan import build_plan, describe
from tests.golden import golden_config

PLUGIN = "tests.plugin_stage"


def plugin_config(tmp_path, name: str = "plugin"):
    """The golden job with the test plugin stage (its fit reads extract) after langid."""
    data = golden_config(tmp_path, name).model_dump(mode="json")
    data["plugins"] = [PLUGIN]
    data["stages"].insert(1, {"name": "short_for_domain", "options": {"fraction": 0.1}})
    return PipelineConfig.model_validate(data)


def test_a_plugin_stage_with_a_fit_runs_in_process(tmp_path):
    cfg = plugin_config(tmp_path)
    names = [s.name for s in build_plan(cfg).steps]
    # each fit right after the stage it reads (extract): the quality model, then the plugin's
    assert names[:4] == ["extract", "quality.train", "short_for_domain.medians", "langid"]
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
    changed = {line.split()[0]: line for line in describe(PipelineConfig.model_validate(data)).splitlines()[1:]}
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
