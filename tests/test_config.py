"""Pipeline config: the default job loads; every bad key is named with its file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from curate.config import ConfigError, PipelineConfig, apply_override, load_config
from curate.filters.toxicity import ToxicityConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "configs" / "default.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _default_data() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def _index(name: str) -> int:
    """Position of stage ``name`` in the default job (the lead inserts stages around it)."""
    return [s["name"] for s in _default_data()["stages"]].index(name)


def test_default_config_loads_and_resolves_inputs():
    cfg = load_config(DEFAULT)
    assert cfg.run_url == "runs/default"
    assert {"toxicity", "pii"} <= {s.name for s in cfg.stages}
    assert isinstance(cfg.stage_config(_index("toxicity")), ToxicityConfig)
    for spec in cfg.inputs:
        assert Path(spec.location()).exists(), spec.path
    assert cfg.shards.seq_len == 256 and cfg.tokenizer.vocab_size == 1024
    # the hash is stable and changes with any setting
    assert cfg.hash() == load_config(DEFAULT).hash()
    assert cfg.hash() != load_config(DEFAULT, ["tokenizer.vocab_size=8000"]).hash()


def test_bad_stage_option_names_the_key_and_file(tmp_path):
    data = _default_data()
    i = _index("toxicity")
    data["stages"][i]["options"]["max_scor"] = 3
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"{path}: stages[{i}].options.max_scor: Extra inputs are not permitted" in msg


def test_bad_stage_option_value_and_unknown_stage(tmp_path):
    data = _default_data()
    i = _index("toxicity")
    data["stages"][i]["options"]["threshold"] = "lots"
    data["stages"].append({"name": "no_such_stage"})
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, data))
    msg = str(e.value)
    assert f"stages[{i}].options.threshold:" in msg
    assert f"stages[{len(data['stages']) - 1}].name: unknown stage 'no_such_stage'" in msg
    assert "toxicity" in msg  # lists the known stages


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("tokenizer.vocab_size=many", "tokenizer.vocab_size:"),
        ("mixx.weights={}", "mixx: Extra inputs are not permitted"),
        ("ray.address=http://x", "ray.address:"),
        ("inputs[0].formatt=html", "inputs[0].formatt: Extra inputs are not permitted"),
        ("shards.tail=cut", "shards.tail:"),
        ("name=a/b", "name:"),
    ],
)
def test_bad_values_name_the_key(override, key):
    import flows.settings  # noqa: F401 - the ray and prefect sections are flows/'s

    with pytest.raises(ConfigError) as e:
        load_config(DEFAULT, [override])
    assert key in str(e.value)
    assert str(DEFAULT) in str(e.value)


def test_overrides_set_nested_and_list_items():
    import flows.settings  # noqa: F401 - the ray section is flows/'s

    i = _index("toxicity")
    cfg = load_config(
        DEFAULT,
        [
            f"stages[{i}].options.threshold=0.5",
            "ray.address=ray://10.0.0.1:10001",
            "run_dir=memory://runs/x",
            "mix.weights={web: 1}",
        ],
    )
    assert cfg.stage_config(i).threshold == 0.5
    assert cfg.ray.address == "ray://10.0.0.1:10001"
    assert cfg.run_url == "memory://runs/x"
    assert cfg.mix.weights == {"web": 1}
    with pytest.raises(ConfigError, match="has no item 9"):
        load_config(DEFAULT, ["stages[9].name=pii"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(DEFAULT, ["tokenizer.vocab_size"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_direct_construction_validates_stage_options():
    data = _default_data()
    i = _index("pii")
    data["stages"][i]["options"] = {"max_items": -1}
    with pytest.raises(ValueError, match=rf"stages\[{i}\]\.options\.max_items"):
        PipelineConfig.model_validate(data)
    d: dict = {}
    apply_override(d, "a.b=[1, 2]")
    apply_override(d, "a.b[1]=null")
    assert d == {"a": {"b": [1, None]}}


def test_file_options_are_found_next_to_the_config_from_any_working_directory(
    tmp_path, monkeypatch
):
    # `sluice run --config /path/to/sluice/configs/default.yaml` from another folder: the
    # decontam eval files (data/eval/*.txt, relative to the repository) must still be read
    import pyarrow as pa

    from curate.dedup.decontam import score

    i = _index("decontam")
    monkeypatch.chdir(ROOT)
    at_root = load_config(DEFAULT)
    monkeypatch.chdir(tmp_path)
    elsewhere = load_config(DEFAULT)
    assert at_root.stages[i].base_dir is None  # found in the working directory: as written
    assert elsewhere.stages[i].base_dir == str(ROOT)
    files = elsewhere.stage_config(i).eval_files
    assert files == [str(ROOT / f) for f in at_root.stage_config(i).eval_files]
    assert at_root.hash() == elsewhere.hash()  # where the checkout lives decides no output
    quoted = (ROOT / at_root.stage_config(i).eval_files[0]).read_text()[:2000]
    scored = score(
        pa.table({"text": [quoted, "nothing from the eval set here"]}), elsewhere.stage_config(i)
    )
    assert scored["contamination_ngrams"].to_pylist()[0] > 0
    assert scored["contamination_ngrams"].to_pylist()[1] == 0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("mix.max_epochs=-1", "mix.max_epochs:"),
        ("mix.max_epochs=0", "mix.max_epochs:"),
        ("mix.max_epochs=256", "mix.max_epochs:"),  # repeats are uint8: 256 would wrap to 0
        ("mix.max_epochs=.nan", "mix.max_epochs:"),
        ("mix.bytes_per_token=0", "mix.bytes_per_token:"),
        ("mix.bytes_per_token=-2", "mix.bytes_per_token:"),
        ("mix.total_tokens=0", "mix.total_tokens:"),
        ("mix.weights={web: .nan}", "mix.weights:"),
        ("mix.weights={web: .inf}", "mix.weights:"),
        ("mix.weights={web: -1, code: 1}", "mix.weights:"),
        ("mix.weights={webb: 1, code: 1}", "mix.weights: 'webb' names no domain"),
        ("tokenizer.max_sentence_bytes=3", "tokenizer.max_sentence_bytes:"),
        ("tokenizer.max_sentence_bytes=0", "tokenizer.max_sentence_bytes:"),
        ("tokenizer.vocab_size=100", "tokenizer.vocab_size: 100 is too small"),  # < 256 bytes
        ("tokenizer.vocab_size=100000000", "tokenizer.vocab_size:"),
        ("tokenizer.num_threads=0", "tokenizer.num_threads:"),
        ("tokenizer.character_coverage=0", "tokenizer.character_coverage:"),
        ("tokenizer.character_coverage=1.5", "tokenizer.character_coverage:"),
        ("name=..", "name:"),
        ("name=.", "name:"),
        ("name=a/../b", "name:"),
        ("extract.timeout_s=.inf", "extract.timeout_s:"),
        ("extract.timeout_s=0", "extract.timeout_s:"),
        ("extract.timeout_s=-1", "extract.timeout_s:"),
        ("shards.seq_len=0", "shards.seq_len:"),
        ("shards.seq_len=1", "shards.seq_len:"),
        ("shards.val_fraction=2", "shards.val_fraction:"),
        ("shards.val_fraction=-0.5", "shards.val_fraction:"),
        ("shards.val_fraction=1", "shards.val_fraction:"),
    ],
)
def test_abused_values_are_one_line_errors_at_load(override, key):
    """Issue 16: each of these passed validation and lost data (or looped, or crashed late)."""
    with pytest.raises(ConfigError) as e:
        load_config(DEFAULT, [override])
    msg = str(e.value)
    assert len(msg.splitlines()) == 1, msg
    assert msg.startswith(f"{DEFAULT}: {key}"), msg


def test_run_dir_inside_an_input_folder_is_an_error(tmp_path):
    data = _default_data()
    data["inputs"] = [{"path": str(tmp_path / "in"), "format": "text", "domain": "rst"}]
    data["mix"]["weights"] = {"rst": 1}
    (tmp_path / "in").mkdir()
    data["run_dir"] = str(tmp_path / "in" / "runs" / "x")
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, data))
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "run_dir: the run directory" in msg
    assert "inputs[0].path" in msg
    data["run_dir"] = str(tmp_path / "runs" / "x")  # next to the input folder: fine
    assert load_config(_write(tmp_path, data)).run_url == str(tmp_path / "runs" / "x")


def test_cli_run_name_dot_dot_fails_before_any_work(tmp_path, monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["run", "--config", str(DEFAULT), "--run-name", "..", "--local"])
    assert e.value.code == 2  # a config error
    assert "name: '..': a name may hold only" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere
