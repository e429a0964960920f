"""Extraction worker processes: a per-document timeout and memory limit that hold anywhere.

HTML extractors and pdfium can hang or balloon on pathological input, and neither can be
interrupted from Python: ``signal.setitimer`` works only on the main thread (not in a Ray
worker's task thread, not in a thread pool) and a stuck thread cannot be killed. So HTML and PDF
extraction run in a small child process (``python -m curate.readers._worker_main``, started with
``subprocess``, so nothing depends on ``multiprocessing``'s start method or on ``__main__``):
the parent sends ``(kind, payload, options)`` over a pipe and waits with ``select`` up to the
timeout; on timeout the child is killed (reason ``timeout``) and a fresh one is started for the
next document. A child that dies (segfault, OOM kill) gives ``extract_crash``; one that hits its
address-space limit gives ``out_of_memory``.

Each thread checks a worker out of a process-wide free list, so threads and Ray tasks sharing a
process extract in parallel without sharing a child. Children are started lazily and reused
across parts; they exit when the parent does (their stdin closes). A child imports its
extractors before its first job (not counted in any timeout), trafilatura only when started for
a trafilatura page (or a PDF): one that extracts HTML with resiliparse never loads it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from curate.readers.text import ReadError

_HEADER = struct.Struct(">Q")
_WARM_TRAFILATURA = "SLUICE_WORKER_TRAFILATURA"  # "0": the worker does not import it up front
STARTUP_S = 120.0  # a loaded machine can take long to import trafilatura and pdfium


class _Worker:
    def __init__(self, memory_mb: int | None, trafilatura: bool = True) -> None:
        env = dict(os.environ)
        if memory_mb:
            env["SLUICE_WORKER_MEMORY_MB"] = str(memory_mb)
        env[_WARM_TRAFILATURA] = "1" if trafilatura else "0"
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "curate.readers._worker_main"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.pid_of_parent = os.getpid()
        self.memory_mb = memory_mb
        self.trafilatura = trafilatura  # imported before the first job (else on first use)
        self.ready = False

    def alive(self) -> bool:
        return self.proc.poll() is None and self.pid_of_parent == os.getpid()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        chunks: list[bytes] = []
        while n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def wait_ready(self) -> None:
        """The child says hello once its imports are done (not counted in any timeout)."""
        if not self.ready:
            (size,) = _HEADER.unpack(self._read_exact(_HEADER.size, time.monotonic() + STARTUP_S))
            if pickle.loads(self._read_exact(size, time.monotonic() + STARTUP_S)) != ("ready",):
                raise EOFError
            self.ready = True

    def call(self, kind: str, payload: Any, options: Any, timeout: float) -> Any:
        self.wait_ready()
        message = pickle.dumps((kind, payload, options), protocol=pickle.HIGHEST_PROTOCOL)
        stdin = self.proc.stdin
        stdin.write(_HEADER.pack(len(message)) + message)  # type: ignore[union-attr]
        stdin.flush()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        (size,) = _HEADER.unpack(self._read_exact(_HEADER.size, deadline))
        status, *rest = pickle.loads(self._read_exact(size, deadline))
        if status == "ok":
            return rest[0]
        raise ReadError(rest[0], rest[1])


_free: list[_Worker] = []
_lock = threading.Lock()


def _needs_trafilatura(kind: str, options: Any) -> bool | None:
    """Whether the job needs a worker that imported trafilatura before its first job (an HTML
    job for trafilatura, the default extractor); None: any worker (a new one imports it)."""
    if kind != "html_page":
        return None
    extractor = (
        options.get("extractor")
        if isinstance(options, dict)
        else getattr(options, "extractor", None)
    )
    return extractor != "resiliparse"


def _checkout(memory_mb: int | None, trafilatura: bool | None = None) -> _Worker:
    with _lock:
        while _free:
            w = _free.pop()
            if w.alive() and w.memory_mb == memory_mb and (w.trafilatura or not trafilatura):
                return w
            if w.pid_of_parent == os.getpid():
                w.kill()
    return _Worker(memory_mb, trafilatura is not False)


def _checkin(w: _Worker) -> None:
    with _lock:
        _free.append(w)


@atexit.register
def shutdown() -> None:
    """Stop every idle worker of this process."""
    with _lock:
        workers, _free[:] = list(_free), []
    for w in workers:
        if w.pid_of_parent == os.getpid():
            w.kill()


def run_isolated(
    kind: str, payload: Any, options: Any, timeout: float, memory_mb: int | None = None
) -> Any:
    """Run ``kind`` (``html_page`` or ``pdf``) in a worker; raises :class:`ReadError` with reason
    ``timeout``, ``extract_crash``, ``out_of_memory`` or the extractor's own reason."""
    for attempt in (0, 1):
        w = _checkout(memory_mb, _needs_trafilatura(kind, options))
        try:
            result = w.call(kind, payload, options, timeout)
        except TimeoutError:
            was_ready = w.ready
            w.kill()
            if not was_ready:
                raise ReadError("extract_crash", "worker did not start") from None
            raise ReadError("timeout", f"{kind} extraction took more than {timeout:g} s") from None
        except (BrokenPipeError, EOFError, ConnectionError) as e:
            code = w.proc.poll()
            w.kill()
            if attempt == 0 and isinstance(e, BrokenPipeError):
                continue  # the idle child had died: retry once with a fresh one
            raise ReadError("extract_crash", f"worker exited with {code}") from None
        except ReadError:
            _checkin(w)
            raise
        _checkin(w)
        return result
    raise AssertionError("unreachable")


def run_job(kind: str, payload: Any, options: Any) -> Any:
    """The work itself (in the child, or in-process when isolation is off)."""
    if kind == "html_page":  # (bytes, declared charset): decoded here, then extract_page
        from curate.readers.html import extract_page
        from curate.readers.text import decode_text

        data, declared = payload
        return extract_page(decode_text(data, declared), options)
    if kind == "pdf":
        from curate.readers.pdf import extract_pdf

        return extract_pdf(payload, options)
    if kind == "sleep":  # for tests: a job that hangs
        time.sleep(float(payload))
        return None
    raise ValueError(f"unknown job kind {kind!r}")


def serve() -> None:
    """Child loop: read a job, run it, write the result; exit when stdin closes."""
    import logging

    logging.disable(logging.CRITICAL)
    memory_mb = os.environ.get("SLUICE_WORKER_MEMORY_MB")
    if memory_mb:
        import resource

        limit = int(memory_mb) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # the protocol owns the real stdout; anything printed by libraries goes to stderr
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    # warm up the imports before the first timed job (trafilatura, the slowest, only when the
    # parent asks: a run that extracts HTML with resiliparse never imports it)
    import pypdfium2  # noqa: F401
    import resiliparse.extract.html2text  # noqa: F401

    if os.environ.get(_WARM_TRAFILATURA, "1") == "1":
        import trafilatura  # noqa: F401

    hello = pickle.dumps(("ready",))
    out.write(_HEADER.pack(len(hello)) + hello)
    out.flush()
    while True:
        head = inp.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return
        (size,) = _HEADER.unpack(head)
        kind, payload, options = pickle.loads(inp.read(size))
        try:
            reply: tuple = ("ok", run_job(kind, payload, options))
        except ReadError as e:
            reply = ("err", e.reason, e.detail)
        except MemoryError:
            reply = ("err", "out_of_memory", f"{kind} extraction over {memory_mb} MiB")
        except RecursionError as e:
            reply = ("err", "extract_error", f"RecursionError: {e}"[:500])
        except Exception as e:  # noqa: BLE001 - any extractor bug → a reason, not a crash
            reply = ("err", "extract_error", f"{type(e).__name__}: {e}"[:500])
        del payload
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_HEADER.pack(len(data)) + data)
        out.flush()
