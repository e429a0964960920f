"""Progress bars for long loops: quiet when stderr is not a terminal (CI, logs, Ray workers).

``progress(iterable, "extract")`` wraps any iterable in a tqdm bar with ``disable=None``: tqdm
then shows the bar only on a TTY, so logs and captured test output stay clean. ``SLUICE_PROGRESS``
overrides that: ``0`` never shows bars, ``1`` always does. ``heartbeat("tokenizer")`` around a
long step without a loop prints ``still running (N s)`` every 5 s (``SLUICE_HEARTBEAT_S``);
``sluice -q`` (``SLUICE_QUIET=1``) silences both.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
HEARTBEAT_S = float(os.environ.get("SLUICE_HEARTBEAT_S", "5"))  # a long step says it is alive


def _disable() -> bool | None:
    """tqdm's ``disable``: None (auto: TTY only) unless SLUICE_PROGRESS forces it (or -q)."""
    if quiet():
        return True
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


def quiet() -> bool:
    """``-q`` (``SLUICE_QUIET=1``, inherited by workers): no heartbeats, no bars."""
    return os.environ.get("SLUICE_QUIET", "").strip() == "1"


@contextmanager
def heartbeat(what: str, every: float = HEARTBEAT_S) -> Iterator[None]:
    """While the block runs: ``<what>: still running (N s)`` on stderr every ``every`` seconds
    (the first after ``every``: a step shorter than that prints nothing); silent with ``-q``."""
    if quiet() or every <= 0:
        yield
        return
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            elapsed = time.monotonic() - start
            print(f"{what}: still running ({elapsed:.0f} s)", file=sys.stderr, flush=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
