"""Peak memory of one step: the process's peak RSS (``VmHWM``) while a block runs.

Linux keeps a process's peak resident set in ``/proc/self/status`` (``VmHWM``); writing ``5``
to ``/proc/self/clear_refs`` resets it to the current RSS, so the peak read after a block is
the block's own (a long-lived Ray worker otherwise reports the peak of every task it ran).
Elsewhere (no ``/proc``) the figure is None. One step at a time per process: a reset in one
thread is seen by every thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

_STATUS = "/proc/self/status"


def peak_rss_mib() -> float | None:
    """This process's peak RSS in MiB (``VmHWM``); None where /proc is not there."""
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS; False where the kernel does not allow it."""
    with suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")
        return True
    return False


def release_unused() -> None:
    """Give freed memory back to the OS: Arrow's pool (mimalloc keeps freed pages) and glibc's
    heap (``malloc_trim``). A long-lived worker that ran a big step otherwise starts the next
    one from that step's footprint."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Peak:
    """The peak RSS (MiB) of the block (None: unknown); ``since_reset``: False when the
    reset failed and the figure is the process's whole peak."""

    mib: float | None = None
    since_reset: bool = True


@contextmanager
def peak_rss() -> Iterator[Peak]:
    """``with peak_rss() as p: ...``: then ``p.mib`` is the block's peak RSS (module doc)."""
    peak = Peak(since_reset=reset_peak_rss())
    try:
        yield peak
    finally:
        mib = peak_rss_mib()
        peak.mib = None if mib is None else round(mib, 1)
