"""``key=value`` overrides of a YAML config (``--set``), one parser for every config of the
project (the curation job, training, sweeps)."""

from __future__ import annotations

import re
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration that does not validate; the message names the file and every bad key."""


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b[1].c=value`` in ``data`` (value parsed as YAML: numbers, lists, null...)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key=value")
    key, raw = override.split("=", 1)
    tokens = re.findall(r"[^.\[\]]+|\[\d+\]", key.strip())
    if not tokens:
        raise ConfigError(f"override {override!r}: empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    node: Any = data
    for tok, nxt in zip(tokens, [*tokens[1:], None], strict=True):
        index = int(tok[1:-1]) if tok.startswith("[") else None
        last = nxt is None
        if index is not None:
            if not isinstance(node, list) or index >= len(node):
                raise ConfigError(f"override {override!r}: {key} has no item {index}")
            if last:
                node[index] = value
            else:
                node = node[index]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: {tok} is not inside a mapping")
            if last:
                node[tok] = value
            else:
                node = node.setdefault(tok, [] if nxt.startswith("[") else {})


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Every override of ``overrides`` applied to ``data`` in order; returns ``data``."""
    for override in overrides:
        apply_override(data, override)
    return data
