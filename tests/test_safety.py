"""Safety (issue 9.4): curation makes no outbound connection; no PII reaches the token shards."""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
import sentencepiece as spm

from curate.filters.pii import DETECTORS, find_pii
from curate.shards.format import load_manifest, open_shard
from tests.netaudit import (
    SocketWatch,
    audit_network,
    classify,
    interface_addresses,
    is_loopback_host,
    kernel_address,
    outbound_target,
    peer_kind,
)
from tests.run_sample import build_run, real_emails, small_flow_config

# Broad on purpose (independent of the PII stage's own pattern): anything@host.tld
LOOSE_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")


# --- the audit hook itself ---------------------------------------------------------------------


def test_loopback_classification():
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "::ffff:127.0.0.1", None):
        assert is_loopback_host(host), host
    for host in (
        "10.0.0.1",
        "192.0.2.1",
        "169.254.169.254",
        "::ffff:8.8.8.8",
        "pypi.org",
        "0.0.0.1",
    ):
        assert not is_loopback_host(host), host
    assert outbound_target("socket.getaddrinfo", ("0.0.0.0", 8080, 0, 0, 0)) is None  # bind
    for own in sorted(interface_addresses()) + [socket.gethostname()]:
        assert classify("socket.getaddrinfo", (own, 0, 0, 0, 0)) == ("interface", f"{own}:0")
    assert classify("socket.gethostbyaddr", ("pypi.org",)) == ("outbound", "pypi.org")
    unix = socket.socket(socket.AF_UNIX)
    try:
        assert outbound_target("socket.connect", (unix, "/tmp/x.sock")) is None
    finally:
        unix.close()


def test_hook_blocks_outbound_before_it_happens_and_allows_loopback():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        with audit_network(block=True) as audit:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
            with pytest.raises(PermissionError, match="192.0.2.1:80"):
                socket.create_connection(("192.0.2.1", 80), timeout=0.2)  # TEST-NET-1
            with pytest.raises(PermissionError, match="metadata.invalid"):
                socket.getaddrinfo("metadata.invalid", 80)  # no DNS query is sent
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with pytest.raises(PermissionError):
                udp.sendto(b"x", ("198.51.100.7", 53))
            udp.close()
    finally:
        server.close()
    targets = [a.target for a in audit.attempts]
    assert targets == ["192.0.2.1:80", "metadata.invalid:80", "198.51.100.7:53"]
    # outside the block, nothing is recorded
    with pytest.raises(OSError):
        socket.getaddrinfo("nonexistent.invalid", 80)
    assert len(audit.attempts) == 3


def test_hook_reaches_child_python_processes():
    code = (
        "import socket\n"
        "try:\n socket.create_connection(('203.0.113.9', 443), timeout=0.2)\n"
        "except PermissionError as e:\n print('blocked', e)\n"
    )
    with audit_network(block=True, subprocesses=True) as audit:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    assert "blocked" in out.stdout, out.stderr
    assert [a.target for a in audit.attempts] == ["203.0.113.9:443"]
    assert audit.attempts[0].pid != __import__("os").getpid()


def test_socket_watch_sees_sockets_that_no_python_hook_sees():
    # a child in isolated mode (-I: no sitecustomize, so no audit hook) holds a connected UDP
    # socket (connect sends no packet); the kernel-table watch, told to allow nothing, finds it
    code = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.connect(('127.0.0.1', 9))\n"
        "time.sleep(1)\n"
    )
    with SocketWatch(interval_s=0.05, allowed=frozenset()) as watch:
        child = subprocess.Popen([sys.executable, "-I", "-c", code])
        assert child.wait(timeout=60) == 0
    # only the child's sockets: earlier tests in this process may leave loopback connections
    # (clients of their servers) that the watch rightly sees too
    seen = [(a.event, a.target) for a in watch.attempts if a.pid == child.pid]
    assert seen == [("kernel udp socket", "127.0.0.1:9")]
    # with the normal rules the same loopback socket is fine
    with SocketWatch(interval_s=0.05) as watch:
        subprocess.run([sys.executable, "-I", "-c", code], timeout=60)
    assert watch.attempts == [] and watch.polls > 5


def test_kernel_socket_table_addresses():
    assert kernel_address("0100007F:1F90") == (ipaddress.ip_address("127.0.0.1"), 8080)
    ipv6_loopback = "00000000000000000000000001000000:0050"
    assert kernel_address(ipv6_loopback) == (ipaddress.ip_address("::1"), 80)
    assert peer_kind("127.0.0.1:80") is None and peer_kind("::ffff:127.0.0.1:80") is None
    assert peer_kind("198.51.100.7:53") == "outbound"
    for own in interface_addresses():
        assert peer_kind(f"{own}:80") == "interface"


# --- curation under audit ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("safety") / "run"
    with audit_network(block=True, subprocesses=True) as audit:
        info = build_run(path)
    return path, info, audit


def test_curation_makes_no_outbound_connection(audited_run):
    _, info, audit = audited_run
    assert info["manifest"].splits["train"].tokens > 0  # the whole pipeline did run
    assert not audit.attempts, audit.report()


# --- PII in the final shards -------------------------------------------------------------------


def shard_documents(shard_dir: Path) -> dict[str, str]:
    """Every document's text as far as the shards hold it, rebuilt from the provenance columns
    (rows are shuffled; a document spans rows) and decoded with the shards' own tokenizer.

    Tokens are placed by their position in the document (``doc_offsets`` + index), so the
    pieces of a document repeated over epochs, which are cut at different places, overlap
    instead of being glued twice. Runs of positions with a gap between them (the tail of a
    document that no row holds) are decoded apart and joined by a newline, so no text is made
    up by joining tokens that were never next to each other."""
    manifest = load_manifest(shard_dir)
    sp = spm.SentencePieceProcessor(model_file=str(shard_dir / manifest.tokenizer.path))
    by_position: dict[str, dict[int, int]] = defaultdict(dict)
    for info in manifest.splits.values():
        for f in info.files:
            table = open_shard(shard_dir / f.path)
            for ids, docs, starts, offsets in zip(
                table.column("input_ids").to_pylist(),
                table.column("doc_ids").to_pylist(),
                table.column("doc_starts").to_pylist(),
                table.column("doc_offsets").to_pylist(),
                strict=True,
            ):
                ends = starts[1:] + [len(ids)]
                for d, s, e, o in zip(docs, starts, ends, offsets, strict=True):
                    tokens = by_position[d]
                    for k, t in enumerate(ids[s:e]):
                        assert tokens.setdefault(o + k, t) == t, (d, o + k)  # repeats agree
    special = {sp.eos_id(), sp.bos_id(), sp.pad_id()}
    texts = {}
    for d, tokens in by_position.items():
        runs: list[list[int]] = []
        previous = None
        for position in sorted(tokens):
            if previous is None or position != previous + 1:
                runs.append([])
            previous = position
            if tokens[position] not in special:
                runs[-1].append(tokens[position])
        texts[d] = "\n".join(sp.decode(run) for run in runs)
    return texts


def _leaks(texts: dict[str, str], emails: set[str]) -> dict[str, list[str]]:
    ip_detectors = [d for d in DETECTORS if d.kind == "ip"]
    leaks: dict[str, list[str]] = {"real": [], "email": [], "ip": []}
    for text in texts.values():
        leaks["real"] += [e for e in emails if e in text]
        leaks["email"] += LOOSE_EMAIL.findall(text)
        leaks["ip"] += [text[a:b] for a, b, _ in find_pii(text, ip_detectors)]
    return leaks


def test_no_email_or_public_ip_in_final_shards(audited_run):
    path, info, _ = audited_run
    emails = real_emails()
    assert len(emails) > 50  # the sample changelogs are full of maintainers' addresses
    texts = shard_documents(path / "shards")
    meta_ids = {
        i
        for p in info["mixed"]
        for i, d in zip(p.column("id").to_pylist(), p.column("domain").to_pylist(), strict=True)
        if d == "meta"
    }
    assert len(meta_ids & texts.keys()) > 20  # changelogs did reach the shards
    assert sum("<EMAIL>" in texts[i] for i in meta_ids & texts.keys()) > 20
    leaks = _leaks(texts, emails)
    assert leaks == {"real": [], "email": [], "ip": []}


def test_the_scan_finds_emails_when_the_pii_stage_is_skipped(tmp_path):
    # control: the same run without the pii stage leaks, and the scan above would see it
    build_run(tmp_path / "nopii", pii=False)
    leaks = _leaks(shard_documents(tmp_path / "nopii" / "shards"), real_emails())
    assert len(set(leaks["real"])) > 20 and len(leaks["email"]) > 20


def test_tempdir_is_not_left_in_pythonpath():
    import os

    before = os.environ.get("PYTHONPATH")
    with audit_network(subprocesses=True):
        assert tempfile.gettempdir() in os.environ["PYTHONPATH"]
    assert os.environ.get("PYTHONPATH") == before
    assert not any("netaudit-" in p for p in sys.path)
    assert Path(__file__).exists()


# --- the real flow: Prefect server + flow + Ray workers, all audited ---------------------------


@pytest.mark.slow
def test_curate_flow_on_ray_makes_no_outbound_connection_and_leaks_no_pii(tmp_path):
    from flows.curate import run_curate
    from tests.prefect_server import local_prefect_server

    cfg = small_flow_config(tmp_path, "safety", ["toxicity", "pii"])
    with (
        audit_network(block=True, subprocesses=True, native=True) as audit,
        local_prefect_server(tmp_path) as server,
    ):
        stats = run_curate(cfg, server.url)
    assert stats["stages"]["pii"]["kept"] > 0
    assert not audit.attempts, audit.report()  # Python hooks and the kernel's socket tables
    assert audit.native_polls > 10
    print("own-interface uses (allowed):", *audit.interface, sep="\n")
    shard_dir = Path(cfg.run_url) / "shards"
    texts = shard_documents(shard_dir)
    assert sum("<EMAIL>" in t for t in texts.values()) > 5  # changelogs made it, redacted
    assert _leaks(texts, real_emails()) == {"real": [], "email": [], "ip": []}
