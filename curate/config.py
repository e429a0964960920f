"""The pipeline configuration: one pydantic model, loaded from YAML with ``a.b=c`` overrides.

Every section is the config model of the code that reads it (readers, stages, mix, tokenizer,
shards); stage ``options`` are validated by the stage's own model, so a typo fails at load time
with the full key (``stages[2].options.max_score: Extra inputs are not permitted``), never in
the middle of a run.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curate.layout import EXTRACT_STAGE, TAIL_STEPS
from curate.mix import MixConfig
from curate.overrides import ConfigError, apply_override  # noqa: F401 - re-exported
from curate.readers import DEFAULT_DOMAIN_RULES, DomainRule, ExtractConfig, InputSpec
from curate.readers.files import FALLBACK_DOMAIN
from curate.shards.write import ShardConfig
from curate.storage import config_hash, join
from curate.tokenizer import TokenizerConfig

ModelT = TypeVar("ModelT", bound=BaseModel)


class StageEntry(BaseModel):
    """One filter/dedup stage of the run, in order: a registered name and its options."""

    model_config = ConfigDict(extra="forbid")
    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    base_dir: str | None = Field(
        None,
        description="set by load_config: where relative file options missing from the working "
        "directory are read from (the config's folder or its parent)",
    )


class PartsConfig(BaseModel):
    """How raw input files are grouped into parts (one task per part per stage)."""

    model_config = ConfigDict(extra="forbid")
    files_per_part: int = Field(64, ge=1)
    bytes_per_part: int = Field(8_000_000, ge=1)


# Sections of a job's config that belong to the layer that runs it, not to curation (flows/:
# ``ray``, ``prefect``): that layer registers their models (:func:`register_section`) and the
# config validates them at load time; they never enter the config hash.
SECTIONS: dict[str, type[BaseModel]] = {}


def register_section(name: str, model: type[BaseModel]) -> None:
    SECTIONS[name] = model


def _section(name: str, value: Any) -> Any:
    """``value`` validated by the model registered for ``name`` (as given when none is)."""
    model = SECTIONS.get(name)
    if model is None or isinstance(value, model):
        return value if value is not None else {}
    try:
        return model.model_validate(value or {})
    except ValidationError as e:  # ".key: message": format_errors prefixes the section
        lines = [
            f"{_loc(err['loc'])}: {err['msg']}{_did_you_mean(err, model)}" for err in e.errors()
        ]
        raise ValueError("; ".join(lines)) from None


class PipelineConfig(BaseModel):
    """A whole curation job: inputs → extract → stages → mix → tokenizer → shards."""

    model_config = ConfigDict(extra="forbid")
    name: str = "default"
    run_dir: str | None = None  # default runs/<name>; any fsspec URL
    inputs: list[InputSpec]
    domain_rules: list[DomainRule] | None = None  # None: the readers' DEFAULT_DOMAIN_RULES
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    parts: PartsConfig = Field(default_factory=PartsConfig)
    plugins: list[str] = Field(default_factory=list)  # modules that register extra stages
    stages: list[StageEntry] = Field(default_factory=list)
    mix: MixConfig
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    shards: ShardConfig = Field(default_factory=ShardConfig)
    # orchestration sections: see SECTIONS (flows.settings); validated when absent too, so a
    # config without them gets the registered defaults
    ray: Any = Field(None, validate_default=True)
    prefect: Any = Field(None, validate_default=True)

    @field_validator("ray", "prefect", mode="before")
    @classmethod
    def _orchestration(cls, v: Any, info: Any) -> Any:
        return _section(info.field_name, v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.\-]+", v) or v in (".", ".."):
            raise ValueError(
                f"{v!r}: a name may hold only letters, digits, '_', '-' and '.' (not '.' or '..')"
            )
        return v

    @model_validator(mode="after")
    def _run_dir_outside_inputs(self) -> PipelineConfig:
        """A run directory inside an input folder would become the next run's input."""
        run = _local_abspath(self.run_url)
        for i, spec in enumerate(self.inputs):
            location = spec.location()
            root = _local_abspath(location if not _has_glob(location) else _glob_dir(location))
            if run is not None and root is not None and (run + os.sep).startswith(root + os.sep):
                raise ValueError(
                    f"run_dir: the run directory {self.run_url!r} is inside inputs[{i}].path "
                    f"{spec.path!r}: its outputs would be read as inputs (set run_dir elsewhere)"
                )
        return self

    @model_validator(mode="after")
    def _weighted_domains_exist(self) -> PipelineConfig:
        """Every weighted domain is one the inputs can produce (a typo empties nothing)."""
        domains = {s.domain for s in self.inputs if s.domain}
        if any(s.domain is None for s in self.inputs):
            rules = DEFAULT_DOMAIN_RULES if self.domain_rules is None else self.domain_rules
            domains |= {r.domain for r in rules} | {FALLBACK_DOMAIN}
        unknown = [k for k in self.mix.weights if k.split("/", 1)[0] not in domains]
        if unknown:
            raise ValueError(
                f"mix.weights: {', '.join(map(repr, unknown))} names no domain the inputs can "
                f"have (inputs' and domain rules' domains: {', '.join(sorted(domains))})"
            )
        return self

    @model_validator(mode="after")
    def _stage_options(self) -> PipelineConfig:
        from curate.stages import STAGES, load_plugins

        problems: list[str] = []
        for i, module in enumerate(self.plugins):
            try:
                load_plugins([module])
            except Exception as e:  # any import failure is a config error
                problems.append(f"plugins[{i}]: cannot import {module!r}: {e}")
        seen: set[str] = set()
        for i, entry in enumerate(self.stages):
            where = f"stages[{i}]"
            if entry.name not in STAGES:
                problems.append(
                    f"{where}.name: unknown stage {entry.name!r} (known: {', '.join(sorted(STAGES))})"
                )
                continue
            if entry.name in seen or entry.name in (EXTRACT_STAGE, *TAIL_STEPS):
                problems.append(f"{where}.name: stage {entry.name!r} appears twice or is reserved")
            seen.add(entry.name)
            try:
                STAGES[entry.name].config.model_validate(entry.options)
            except ValidationError as e:
                model = STAGES[entry.name].config
                problems += [
                    f"{where}.options{_loc(err['loc'])}: {err['msg']}{_did_you_mean(err, model)}"
                    for err in e.errors()
                ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def run_url(self) -> str:
        """The run directory (local path or fsspec URL)."""
        return (self.run_dir or join("runs", self.name)).rstrip("/")

    def stage_config(self, index: int) -> BaseModel:
        """The validated options of ``stages[index]`` as the stage's own config model."""
        from curate.stages import STAGES, load_plugins

        load_plugins(self.plugins)
        entry = self.stages[index]
        model = STAGES[entry.name].config
        options = dict(entry.options)
        if entry.base_dir:
            base = Path(entry.base_dir)

            def located(p: Any) -> Any:
                if isinstance(p, list):
                    return [located(q) for q in p]
                if isinstance(p, str) and _relative(p) and (base / p).exists():
                    return str(base / p)
                return p

            for name in file_options(model):
                if name in options:
                    options[name] = located(options[name])
        return model.model_validate(options)

    def locate_stage_files(self, config_dir: Path) -> None:
        """Set each stage's ``base_dir`` when its relative file options are not in the working
        directory but next to the config (its folder, or the parent for configs/*.yaml)."""
        from curate.stages import STAGES, load_plugins

        load_plugins(self.plugins)
        for entry in self.stages:
            names = file_options(STAGES[entry.name].config)
            for name in names & entry.options.keys():
                value = entry.options[name]
                for p in value if isinstance(value, list) else [value]:
                    root = found_next_to_config(p, config_dir) if isinstance(p, str) else None
                    if root is not None and entry.base_dir is None:
                        entry.base_dir = str(root)

    def hash(self) -> str:
        """Hash of what decides the outputs (not where they go or which machines run them)."""
        exclude = {"run_dir": True, "ray": True, "prefect": True,
                   "inputs": {"__all__": {"base_dir"}},
                   "stages": {"__all__": {"base_dir"}}}  # fmt: skip
        return config_hash(self.model_dump(mode="json", exclude=exclude))


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _glob_dir(path: str) -> str:
    """The folder part of a glob before its first wildcard."""
    head = re.split(r"[*?\[]", path, maxsplit=1)[0]
    return head if head.endswith(("/", os.sep)) else os.path.dirname(head)


def _local_abspath(url: str) -> str | None:
    """The absolute, symlink-resolved path of a local path or file:// URL; None for others."""
    if url.startswith("file://"):
        url = url[len("file://") :]
    elif "://" in url:
        return None
    return os.path.realpath(url or ".")


def file_options(model: type[BaseModel]) -> set[str]:
    """Names of a stage config's options marked ``FILE_OPTION`` (they name files)."""
    return {
        name
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("file_option")
    }


def _relative(p: str) -> bool:
    """A local relative path that the working directory does not have."""
    return "://" not in p and not Path(p).is_absolute() and not Path(p).exists()


def found_next_to_config(p: str, config_dir: Path) -> Path | None:
    """The folder a relative path missing from the working directory is found in: the config's
    folder or its parent (the repository root for configs/*.yaml); None when neither has it."""
    if not _relative(p):
        return None
    for root in (config_dir, config_dir.parent):
        if (root / p).exists():
            return root.resolve()
    return None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _field_names(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    """Every key name of ``model`` and of the models nested in it (for "did you mean")."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    stack = [f.annotation for f in model.model_fields.values()]
    while stack:
        t = stack.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            names |= _field_names(t, seen)
        stack += list(get_args(t))
    return names


def _did_you_mean(error: dict[str, Any], model: type[BaseModel] | None) -> str:
    """`` (did you mean 'x'?)`` for an unknown key close to a known one; "" otherwise."""
    if model is None or error["type"] != "extra_forbidden" or not error["loc"]:
        return ""
    unknown = str(error["loc"][-1])
    close = difflib.get_close_matches(unknown, sorted(_field_names(model)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _override_for(key: str, overrides: list[str]) -> str | None:
    """The last ``--set`` override that set ``key`` (or a key above or below it)."""
    for o in reversed(overrides):
        k = o.split("=", 1)[0].strip()
        if (
            key == k
            or key.startswith(k + ".")
            or key.startswith(k + "[")
            or k.startswith(key + ".")
        ):
            return o
    return None


def format_errors(
    err: ValidationError,
    source: str = "",
    overrides: list[str] | None = None,
    model: type[BaseModel] | None = None,
) -> str:
    """One line per error: ``<source>: <key path>: <message>``, ``(from --set k=v)`` when an
    override set the key, and "did you mean" for an unknown key close to a key of ``model``."""
    lines = []
    for e in err.errors():
        key = _loc(e["loc"]).lstrip(".")
        msg = e["msg"].removeprefix("Value error, ") + _did_you_mean(e, model)
        override = _override_for(key, overrides or []) if key else None
        if override:
            msg += f" (from --set {override})"
        prefix = f"{source}: " if source else ""
        if key and msg.startswith("."):  # a registered section's errors: ".key: message"
            lines += [f"{prefix}{key}{m.removeprefix('Value error, ')}" for m in msg.split("; ")]
        elif key:
            lines.append(f"{prefix}{key}: {msg}")
        else:  # model-level errors already name their keys (stage options)
            lines += [f"{prefix}{m}" for m in msg.split("; ")]
    return "\n".join(lines)


def load_model_yaml(
    model: type[ModelT], path: str | Path, overrides: list[str] | None = None
) -> ModelT:
    """A YAML file (with ``key=value`` overrides) validated as ``model``: the loader of the
    training and sweep configs. ConfigError, one line per problem naming the key and the file
    or the ``--set`` it came from."""
    from curate.overrides import apply_overrides

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    data = apply_overrides(data, list(overrides or []))
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e, str(path), list(overrides or []), model)) from None


def load_config(
    path: str | Path,
    overrides: list[str] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> PipelineConfig:
    """Read a YAML config, apply ``key=value`` overrides (then ``edit`` on the raw mapping: an
    ablation's variant), validate; ConfigError names the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    for o in overrides or []:
        apply_override(data, o)
    if edit is not None:
        edit(data)
    _resolve_relative_inputs(data, path.parent)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e, str(path), overrides, PipelineConfig)) from None
    cfg.locate_stage_files(path.parent)
    return cfg


def _resolve_relative_inputs(data: dict[str, Any], base: Path) -> None:
    """A relative input path is read from the working directory when it exists there, else
    from the config file's folder or its parent (the repository root for configs/*.yaml): that
    folder becomes the spec's ``base_dir``. ``path`` stays as written, since it names the
    documents (their ``source`` and ids do not depend on where the checkout lives)."""
    for spec in data.get("inputs") or []:
        p = spec.get("path") if isinstance(spec, dict) else None
        if isinstance(p, str) and not spec.get("base_dir"):
            root = found_next_to_config(p, base)
            if root is not None:
                spec["base_dir"] = str(root)
