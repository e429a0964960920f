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
without Python (Ray's C++ raylet/GCS) is out of reach of this hook: ``native=True`` adds
:class:`SocketWatch`, which polls the kernel's socket tables (/proc/net/tcp, tcp6, udp, udp6)
for sockets of this process and all its descendants whose peer is off this machine. It sees any
socket that lives for at least one poll (a connection being set up included), whoever made it;
it records, it cannot block.
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
    native_polls: int = 0  # kernel socket-table polls (audit_network(native=True))

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


def _descendants(root: int) -> set[int]:
    """``root`` and every process below it (from /proc/<pid>/stat parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def _socket_inodes(pids: set[int]) -> dict[int, int]:
    """Socket inode -> the pid holding it, over ``pids``' open file descriptors."""
    owners: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        owners[int(link[8:-1])] = pid
    return owners


def kernel_address(hex_address: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """``0100007F:1F90`` (a /proc/net/tcp address: 32-bit words in host order) -> (IP, port)."""
    ip_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(ip_hex)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
    return ipaddress.ip_address(raw), int(port_hex, 16)


def socket_peers() -> list[tuple[str, int, str]]:
    """(protocol, inode, peer "ip:port") of every socket in this network namespace that has a
    peer (connected or connecting TCP, connected UDP)."""
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with contextlib.suppress(OSError):
            for line in Path("/proc/net", proto).read_text().splitlines()[1:]:
                fields = line.split()
                ip, port = kernel_address(fields[2])
                if ip.is_unspecified:  # listening, or an unconnected UDP socket
                    continue
                out.append((proto, int(fields[9]), f"{ip}:{port}"))
    return out


def peer_kind(peer: str, allowed: frozenset[str] | None = None) -> str | None:
    """None for a loopback peer, "interface" for this machine's own address, else "outbound".
    With ``allowed`` (a control test), exactly the peers listed there are fine."""
    host = peer.rsplit(":", 1)[0]
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        host = str(ip.ipv4_mapped)
    if allowed is not None:
        return None if host in allowed else "outbound"
    if is_loopback_host(host):
        return None
    return "interface" if host in interface_addresses() else "outbound"


class SocketWatch:
    """Poll the kernel's socket tables while running; record the peers of sockets held by this
    process and its descendants (Ray's raylet and GCS, Prefect's server, workers) as
    :class:`Attempt` s: off this machine in ``attempts``, its own addresses in ``interface``.
    ``allowed``: peer addresses to ignore instead of loopback (for a control test)."""

    def __init__(self, interval_s: float = 0.1, allowed: frozenset[str] | None = None) -> None:
        self.interval_s = interval_s
        self.allowed = allowed
        self.attempts: list[Attempt] = []
        self.interface: list[Attempt] = []
        self.polls = 0
        self._seen: set[tuple[int, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="socket-watch", daemon=True)

    def poll(self) -> None:
        peers = [p for p in socket_peers() if peer_kind(p[2], self.allowed)]
        if peers:  # only then the (costlier) walk over the processes' file descriptors
            owners = _socket_inodes(_descendants(os.getpid()))
            for proto, inode, peer in peers:
                pid = owners.get(inode)
                if pid is None or (pid, peer) in self._seen:
                    continue
                self._seen.add((pid, peer))
                kind = peer_kind(peer, self.allowed)
                with contextlib.suppress(OSError):
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]
                    cmd = " ".join(a.decode(errors="replace") for a in argv)
                    attempt = Attempt(f"kernel {proto} socket", peer, pid, f"  cmd: {cmd}")
                    (self.attempts if kind == "outbound" else self.interface).append(attempt)
        self.polls += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> SocketWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()  # the last state


@contextmanager
def audit_network(
    block: bool = True, subprocesses: bool = False, native: bool = False
) -> Iterator[NetAudit]:
    """Record outbound attempts made inside the block (and by child Pythons if asked; with
    ``native``, also sockets of any descendant process seen in the kernel's tables)."""
    install()
    audit = NetAudit(block=block)
    watch = SocketWatch() if native else None
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
        if watch is None:
            yield audit
        else:
            with watch:
                yield audit
    finally:
        with _lock:
            _active.remove(audit)
        if watch is not None:
            audit.attempts += watch.attempts
            audit.interface += watch.interface
            audit.native_polls = watch.polls
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


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket (or bound UDP socket) of a process."""

    proto: str
    ip: str
    port: int
    pid: int
    cmd: str

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.ip)

    def __str__(self) -> str:
        return f"{self.proto} {self.ip}:{self.port} pid {self.pid} ({self.cmd})"


def listeners(root: int) -> list[Listener]:
    """Listening TCP and bound UDP sockets held by ``root`` and its descendants, from the
    kernel's socket tables (what ``ss -ltnup`` shows for that process tree)."""
    owners = _socket_inodes(_descendants(root))
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with contextlib.suppress(OSError):
            for line in Path("/proc/net", proto).read_text().splitlines()[1:]:
                fields = line.split()
                pid = owners.get(int(fields[9]))
                if pid is None or (proto.startswith("tcp") and fields[3] != "0A"):  # LISTEN
                    continue
                ip, port = kernel_address(fields[1])
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                cmd = ""
                with contextlib.suppress(OSError):
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
                    cmd = " ".join(a.decode(errors="replace")[-60:] for a in argv)
                out.append(Listener(proto, str(ip), port, pid, cmd))
    return out


def alive(pids: set[int]) -> set[int]:
    """The ``pids`` that are still running (zombies, already dead, are not)."""
    out = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.add(pid)
    return out
