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
    assert cfg.shards.seq_len == 256 and cfg.tokenizer.vocab_size == 4096
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
