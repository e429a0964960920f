"""Peak memory of one step: the process's peak RSS (``VmHWM``) while a block runs.

Linux keeps a process's peak resident set in ``/proc/self/status`` (``VmHWM``); writing ``5``
to ``/proc/self/clear_refs`` resets it to the current RSS, so the peak read after a block is
the block's own (a long-lived Ray worker otherwise reports the peak of every task it ran).
Elsewhere (no ``/proc``) the figure is None. One step at a time per process: a reset in one
thread is seen by every thread. Between calls, freed memory goes back to the OS only while the
process holds more than ``RELEASE_ABOVE_MIB`` (:func:`release_unused`), so a call's peak may
include up to that much the previous call freed and this one reuses.
"""

from __future__ import annotations

import os
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


# below this resident size, freed memory stays with the process: the next call reuses it, and
# giving it back only to fault it in again cost ~0.5 s of system time over the steps of a
# 3,877-page run (each step released 100-270 MiB; the kernel zeroes every page faulted back)
RELEASE_ABOVE_MIB = 512


def current_rss_mib() -> float | None:
    """This process's resident set now, in MiB (None where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def release_unused(above_mib: float = RELEASE_ABOVE_MIB) -> None:
    """Give freed memory back to the OS when the process holds more than ``above_mib`` MiB
    (else the next call reuses it): Arrow's pool (mimalloc keeps freed pages) and glibc's heap
    (``malloc_trim``). A long-lived worker that ran a big step otherwise starts the next one
    from that step's footprint."""
    rss = current_rss_mib()
    if rss is not None and rss <= above_mib:
        return
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


# prctl(2) option: no transparent huge pages for the calling process and its children
_PR_SET_THP_DISABLE = 41
KEEP_THP_ENV = "SLUICE_KEEP_THP"


def disable_transparent_huge_pages() -> bool:
    """Stop transparent huge pages for this process and the processes it starts (Linux's
    ``prctl(PR_SET_THP_DISABLE)``, inherited across fork and exec); True when they are off.

    Why: Arrow's allocator (mimalloc) returns freed memory to the kernel after a second, and
    a step reads and writes tables of tens of MiB: with huge pages a 3,877-page run took ~600
    huge-page faults and spent 4.6-5.7 s of its ~26 CPU s in the kernel, without them 1.5-2.0 s
    (``bench/RESULTS.md``, issue 19, sixth round). ``SLUICE_KEEP_THP=1`` keeps them; elsewhere
    than Linux this does nothing."""
    if os.environ.get(KEEP_THP_ENV, "").strip() == "1":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


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
