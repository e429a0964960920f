"""Progress bars for long loops: quiet when stderr is not a terminal (CI, logs, Ray workers).

``progress(iterable, "extract")`` wraps any iterable in a tqdm bar with ``disable=None``: tqdm
then shows the bar only on a TTY, so logs and captured test output stay clean. ``SLUICE_PROGRESS``
overrides that: ``0`` never shows bars, ``1`` always does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _disable() -> bool | None:
    """tqdm's ``disable``: None (auto: TTY only) unless SLUICE_PROGRESS forces it."""
    forced = os.environ.get("SLUICE_PROGRESS", "").strip()
    if forced == "0":
        return True
    if forced == "1":
        return False
    return None


def progress(
    iterable: Iterable[T],
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    **kwargs,
) -> Iterator[T]:
    """``iterable`` wrapped in a tqdm bar (shown only on a TTY unless SLUICE_PROGRESS=1)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return iter(progress_bar(total, desc, unit, iterable=iterable, **kwargs))


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", **kwargs) -> tqdm:
    """A manual bar (``bar.update(n)``; use as a context manager) with the same TTY rule."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=_disable(),
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )
