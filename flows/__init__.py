"""Prefect flows, Ray runtime and the CLI on top of ``curate`` and ``train``."""

from flows import settings as _settings  # noqa: F401 - registers the ray/prefect config sections
