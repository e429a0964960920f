"""Record (and block) every network connection attempt that leaves the loopback interface.

Python audit hooks (PEP 578) see ``socket.connect``, ``socket.sendto``/``sendmsg`` and name
lookups (``socket.getaddrinfo``, ``socket.gethostbyname``/``gethostbyaddr``) in this process,
whatever library makes them (httpx, urllib, Ray's Python side, ...). Allowed: 127.0.0.0/8, ::1,
"localhost", unix sockets and other non-IP families (netlink), and the all-interfaces wildcard
of a bind (0.0.0.0, ::). This machine's own non-loopback addresses and host name are allowed
but listed (``NetAudit.interface``). Anything else is an outbound :class:`Attempt` and, with
``block=True``, refused with ``PermissionError`` *before* the packet leaves, so a test can fail
on it without the traffic ever happening.

``audit_network(subprocesses=True)`` also covers child Python processes (Prefect server, Ray
workers, CLI subprocesses): it puts a ``sitecustomize.py`` that installs the same hook on
``PYTHONPATH`` and collects their attempts from a log file. Native code that opens sockets
without Python (Ray's C++ raylet/GCS) is out of reach of this hook.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
LOG_ENV = "SLUICE_NETAUDIT_LOG"
BLOCK_ENV = "SLUICE_NETAUDIT_BLOCK"


def is_loopback_host(host: object) -> bool:
    """True for loopback IPs (127.0.0.0/8, ::1, v4-mapped loopback) and localhost names."""
    if host is None:  # getaddrinfo(None, port): the local wildcard/loopback
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].lower()
    if name in LOCAL_NAMES or name == "":
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


WILDCARDS = {"0.0.0.0", "::", "0:0:0:0:0:0:0:0"}  # a bind to all interfaces, not a peer


@functools.cache
def interface_addresses() -> frozenset[str]:
    """This machine's own non-loopback addresses (from /proc; no network needed)."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for prev, line in zip(lines, lines[1:], strict=False):
            if "host LOCAL" in line:
                found.add(prev.split()[-1])
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(int(raw, 16))))
    return frozenset(a for a in found if not is_loopback_host(a))


def _own_name(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    return isinstance(host, str) and host.lower() == socket.gethostname().lower()


def classify(event: str, args: tuple) -> tuple[str, str] | None:
    """``("outbound", target)`` for a destination off this machine, ``("interface", target)``
    for one of its own non-loopback addresses (or its own host name), None for loopback."""
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], args[1] if len(args) > 1 else None
        family = getattr(sock, "family", None)
        if family not in (socket.AF_INET, socket.AF_INET6) or address is None:
            return None  # unix socket, netlink, connected-socket sendmsg
        host = address[0] if isinstance(address, tuple) else address
        port = address[1] if isinstance(address, tuple) and len(address) > 1 else ""
        target = f"{host}:{port}"
    elif event == "socket.getaddrinfo":
        host = args[0].decode() if isinstance(args[0], bytes) else args[0]
        if host in WILDCARDS:
            return None
        target = f"{host}:{args[1]}"
    elif event in ("socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr"):
        host = args[0]
        target = str(host)
    else:
        return None
    if is_loopback_host(host):
        return None
    if _own_name(host) or str(host).strip("[]") in interface_addresses():
        return "interface", target
    return "outbound", target


def outbound_target(event: str, args: tuple) -> str | None:
    """The off-machine destination of a socket audit event, or None."""
    found = classify(event, args)
    return found[1] if found and found[0] == "outbound" else None


@dataclass
class Attempt:
    event: str
    target: str
    pid: int
    stack: str = ""

    def __str__(self) -> str:
        return f"{self.event} -> {self.target} (pid {self.pid})" + (
            f"\n{self.stack}" if self.stack else ""
        )


@dataclass
class NetAudit:
    """``attempts``: destinations off this machine (blocked with ``block``); ``interface``:
    uses of this machine's own non-loopback addresses or name (allowed, for information)."""

    block: bool = True
    attempts: list[Attempt] = field(default_factory=list)
    interface: list[Attempt] = field(default_factory=list)

    def report(self) -> str:
        return "\n".join(str(a) for a in self.attempts) or "no outbound attempts"


_active: list[NetAudit] = []
_lock = threading.Lock()
_installed = False
_in_hook = threading.local()


def _short_stack() -> str:
    import traceback

    frames = traceback.extract_stack()[:-3]
    return "".join(traceback.format_list(frames[-6:]))


def _hook(event: str, args: tuple) -> None:
    if not _active or not event.startswith("socket."):
        return
    if getattr(_in_hook, "busy", False):
        return
    _in_hook.busy = True
    try:
        found = classify(event, args)
        if found is None:
            return
        kind, target = found
        attempt = Attempt(event, target, os.getpid(), _short_stack())
        with _lock:
            audits = list(_active)
        for audit in audits:
            (audit.attempts if kind == "outbound" else audit.interface).append(attempt)
        if kind == "outbound" and any(a.block for a in audits):
            raise PermissionError(f"network audit: outbound {event} to {target} blocked")
    finally:
        _in_hook.busy = False


def install() -> None:
    """Install the process-wide hook once (audit hooks cannot be removed; inactive = no-op)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True


_SITECUSTOMIZE = '''\
"""Installed by tests/netaudit.py: log (and block) outbound socket use of this process."""
import json, os, sys, threading
_log = os.environ.get("{log_env}")
_block = os.environ.get("{block_env}") == "1"
if _log:
    sys.path.insert(0, {tests_parent!r})
    from tests.netaudit import classify
    _busy = threading.local()

    def _netaudit_hook(event, args):
        if not event.startswith("socket.") or getattr(_busy, "on", False):
            return
        _busy.on = True
        try:
            found = classify(event, args)
            if found is None:
                return
            kind, target = found
            try:
                with open(_log, "a") as f:
                    f.write(json.dumps({{"kind": kind, "event": event, "target": target,
                                         "pid": os.getpid(), "argv": sys.argv[:3]}}) + "\\n")
            except OSError:
                pass  # the audit ended and its log is gone: still block below
            if _block and kind == "outbound":
                raise PermissionError(f"network audit: outbound {{event}} to {{target}} blocked")
        finally:
            _busy.on = False

    sys.addaudithook(_netaudit_hook)
    sys.path.pop(0)
'''


@contextmanager
def audit_network(block: bool = True, subprocesses: bool = False) -> Iterator[NetAudit]:
    """Record outbound attempts made inside the block (and by child Pythons if asked)."""
    install()
    audit = NetAudit(block=block)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", LOG_ENV, BLOCK_ENV)}
    tmp = tempfile.TemporaryDirectory(prefix="netaudit-") if subprocesses else None
    log = None
    if tmp is not None:
        site = Path(tmp.name)
        (site / "sitecustomize.py").write_text(
            _SITECUSTOMIZE.format(
                log_env=LOG_ENV,
                block_env=BLOCK_ENV,
                tests_parent=str(Path(__file__).resolve().parent.parent),
            )
        )
        log = site / "attempts.jsonl"
        log.touch()
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(site), *([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else [])]
        )
        os.environ[LOG_ENV] = str(log)
        os.environ[BLOCK_ENV] = "1" if block else "0"
    with _lock:
        _active.append(audit)
    try:
        yield audit
    finally:
        with _lock:
            _active.remove(audit)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if log is not None:
            for line in log.read_text().splitlines():
                rec = json.loads(line)
                attempt = Attempt(rec["event"], rec["target"], rec["pid"], f"  argv: {rec['argv']}")
                (audit.attempts if rec["kind"] == "outbound" else audit.interface).append(attempt)
        if tmp is not None:
            tmp.cleanup()
