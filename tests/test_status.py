"""``sluice status``, ``run --force`` and the stale-step warnings, on the small real job (the
golden config, in process): done / stale / pending per step, after a config change and after
``train-tokenizer`` retrained the tokenizer under the shards."""

from __future__ import annotations

import json
import shutil

import pytest

from curate import runner
from flows.cli import main
from tests.golden import golden_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("status")
    runner.run_pipeline(golden_config(tmp))
    return tmp / "runs" / "golden"


@pytest.fixture
def run(finished, tmp_path):
    cfg = golden_config(tmp_path)
    shutil.copytree(finished, tmp_path / "runs" / "golden")
    return tmp_path / "runs" / "golden", cfg, tmp_path / "golden.yaml"


def states(text: str) -> dict[str, str]:
    """step -> state from ``sluice status``'s step lines."""
    out = {}
    for line in text.splitlines():
        words = line.split()
        if line.startswith("  ") and len(words) > 2:
            state = words[2] if words[1] == "reduce" else words[4]
            out[words[0]] = state
    return out


def test_status_of_a_finished_run_is_done_with_counts(run, capsys):
    path, _, _ = run
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    got = states(out)
    assert got and set(got.values()) == {"done"}, out
    assert "kept" in out and "quarantined" in out  # document counts on the stage lines


def test_status_after_a_config_change_and_run_warns(run, capsys):
    path, _, config = run
    assert (
        main(["status", str(path), "--config", str(config), "--set", "tokenizer.vocab_size=600"])
        == 0
    )
    got = states(capsys.readouterr().out)
    assert got["tokenizer"] == "stale" and got["encode"] == "stale" and got["shards"] == "stale"
    assert got["extract"] == got["mix"] == "done"
    main(["run", "--local", "--config", str(config), "--set", "tokenizer.vocab_size=600"])
    err = capsys.readouterr().err
    assert "stale step(s) will be recomputed: tokenizer (config or code changed)" in err
    assert main(["status", str(path)]) == 0  # the run now has that config: all done again
    assert set(states(capsys.readouterr().out).values()) == {"done"}


def test_train_tokenizer_says_the_shards_are_stale(run, capsys):
    path, _, _ = run
    assert main(["train-tokenizer", "--run", str(path), "--set", "tokenizer.vocab_size=600"]) == 0
    err = capsys.readouterr().err
    assert "encode, shards stale" in err
    main(["status", str(path)])
    got = states(capsys.readouterr().out)
    assert got["tokenizer"] == "done" and got["encode"] == "stale" and got["shards"] == "stale"


def test_force_recomputes_from_a_step_on(run, capsys):
    path, _, config = run
    marker = path / "pii" / "part-00000.done.json"
    before = json.loads(marker.read_text())["stats"]["seconds"]
    main(["run", "--local", "--config", str(config), "--force", "pii"])
    timings = json.loads((path / "timings.json").read_text())["skipped_parts"]
    assert timings["pii"] == 0 and timings["encode"] == 0 and timings["extract"] > 0
    assert json.loads(marker.read_text())["stats"]["seconds"] != before
    with pytest.raises(SystemExit) as e:
        main(["run", "--local", "--config", str(config), "--force", "pi"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "sluice: error: --force pi: no such step (did you mean 'pii'?)" in err
