"""Two Ray nodes as separate processes: ``sluice run --ray-address`` on a real cluster.

A Ray head and one worker node are started with ``ray start`` (1 CPU each). Where the machine
permits (root, ``ip netns``), the worker lives in its own network namespace joined to the host
by a veth pair, so it is a second host as far as the network goes (its own IP, its own
loopback); otherwise both nodes run on loopback. ``SLUICE_CLUSTER_MODE=loopback`` forces the
fallback. The sample job runs against a real Prefect server that both nodes reach, with a run
directory on a filesystem both see: once with the head alone (a plain path) and once with both
nodes (a ``file://`` URL). Both runs must equal an in-process run byte for byte, and in the
second every per-part step must have run tasks on both nodes (``tasks.json``). The docs/s of
both runs are printed (``-s``) and appended to ``$SLUICE_CLUSTER_RESULTS`` when set.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flows import runtime

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
OBJECT_STORE = 200 * 1024 * 1024
COMPARED = (".parquet", ".arrow", ".model")
COMPARED_NAMES = ("manifest.json", "stats.json")
PER_PART_STEPS = ("extract", "toxicity", "pii", "mix", "encode")

JOB = f"""
name: cluster
inputs:
  - {{path: data/sample/html/debian-handbook, base_dir: {ROOT}, format: html, domain: web}}
  - {{path: data/sample/html/python3.11-doc, base_dir: {ROOT}, format: html, domain: web}}
  - {{path: data/sample/pdf, base_dir: {ROOT}, format: pdf, domain: pdf}}
  - {{path: data/sample/code, base_dir: {ROOT}, format: code, domain: code}}
  - {{path: data/sample/rst, base_dir: {ROOT}, format: text, domain: rst}}
  - {{path: data/sample/fortune/fortunes-it-off, base_dir: {ROOT}, format: fortune, domain: fortune}}
parts: {{files_per_part: 10, bytes_per_part: 400000}}
stages:
  - {{name: toxicity, options: {{threshold: 0.01, min_hits: 2}}}}
  - {{name: pii, options: {{}}}}
mix: {{weights: {{web: 2, pdf: 1, rst: 1, code: 1, fortune: 1}}, total_tokens: 300000,
      max_epochs: 2, seed: 0}}
tokenizer: {{vocab_size: 1000, sample_bytes: 600000, num_threads: 1}}
shards: {{seq_len: 128, sequences_per_file: 512, val_fraction: 0.05}}
prefect: {{start_server: false, artifact_key: sluice-funnel-cluster}}
"""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> bool:
    """Whether ``cmd`` succeeded (False also when it cannot be run: no ``ip``, not permitted)."""
    try:
        return subprocess.run(cmd, capture_output=True, check=False, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _reachable(prefix: list[str], host: str) -> bool:
    """Whether a process started with ``prefix`` can open a TCP connection to ``host``."""
    try:
        listener = socket.create_server((host, 0))
    except OSError:
        return False
    with listener:
        port = listener.getsockname()[1]
        code = f"import socket; socket.create_connection(({host!r}, {port}), timeout=5).close()"
        return _run([*prefix, sys.executable, "-c", code])


@dataclass
class Network:
    """Where the two nodes live: the head's and the worker's IP, and the worker's namespace."""

    mode: str  # "netns" or "loopback"
    head_ip: str
    worker_ip: str
    netns: str | None = None

    def worker_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []


@contextlib.contextmanager
def network() -> Iterator[Network]:
    """A network namespace and veth pair for the worker when permitted, else loopback."""
    forced = os.environ.get("SLUICE_CLUSTER_MODE", "")
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    ns, host_if, ns_if = f"slc{tag}", f"slc{tag}h", f"slc{tag}w"
    subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    head_ip, worker_ip = f"{subnet}.1", f"{subnet}.2"
    steps = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", ns],
        ["ip", "addr", "add", f"{head_ip}/30", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{worker_ip}/30", "dev", ns_if],
        ["ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
    ]
    made = (
        forced != "loopback"
        and all(_run(cmd) for cmd in steps)
        and _reachable(["ip", "netns", "exec", ns], head_ip)
    )
    try:
        if made:
            yield Network("netns", head_ip, worker_ip, ns)
        else:
            if forced == "netns":
                pytest.fail("SLUICE_CLUSTER_MODE=netns but ip netns/veth is not permitted here")
            yield Network("loopback", runtime.LOCAL_HOST, runtime.LOCAL_HOST)
    finally:
        _run(["ip", "link", "del", host_if])  # deletes both ends of the pair
        _run(["ip", "netns", "del", ns])


@dataclass
class RayNode:
    """One ``ray start`` node; its daemons share the process group of the ``ray start`` call."""

    temp_dir: str
    pgid: int = 0
    log: list[str] = field(default_factory=list)

    def start(self, prefix: list[str], args: list[str], env: dict[str, str]) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        cmd = [*prefix, ray, "start", *args, "--temp-dir", self.temp_dir, "--disable-usage-stats"]
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        self.pgid = proc.pid
        out, _ = proc.communicate(timeout=180)
        self.log.append(out)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-3000:]}"

    def stop(self) -> None:
        """SIGTERM then SIGKILL to the node's process group (never `ray stop`: that would end
        every Ray on the machine)."""
        if not self.pgid:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, sig)
            time.sleep(wait)


def _cluster_nodes(address: str, env: dict[str, str]) -> dict[str, str]:
    """Alive node id -> IP, asked from a separate driver process."""
    code = (
        f"import json, ray; ray.init(address={address!r}, log_to_driver=False); "
        "print(json.dumps({n['NodeID']: n['NodeManagerAddress'] for n in ray.nodes() "
        "if n['Alive']}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wait_nodes(address: str, n: int, env: dict[str, str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        nodes = _cluster_nodes(address, env)
        if len(nodes) >= n or time.monotonic() > deadline:
            return nodes
        time.sleep(2)


def _sluice_run(config: Path, run_dir: str, address: str, env: dict[str, str]) -> float:
    """``sluice run --config C --ray-address A``; returns its wall seconds."""
    cmd = [sys.executable, "-m", "flows.cli", "run", "--config", str(config)]
    cmd += ["--ray-address", address, "--set", f"run_dir={run_dir}"]
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return seconds


def _assert_same_bytes(run: Path, reference: Path) -> int:
    compared = 0
    for p in sorted(reference.rglob("*")):
        if p.suffix in COMPARED or p.name in COMPARED_NAMES:
            other = run / p.relative_to(reference)
            assert other.exists(), other
            assert other.read_bytes() == p.read_bytes(), other
            compared += 1
    return compared


def _docs_per_s(run: Path, seconds: float) -> dict[str, float]:
    stats = json.loads((run / "stats.json").read_text())
    steps = json.loads((run / "timings.json").read_text())["steps"]
    docs = stats["stages"]["extract"]["docs_in"]
    flow_s = sum(steps.values())
    return {
        "docs": docs,
        "wall_s": round(seconds, 1),
        "flow_s": round(flow_s, 1),
        "extract_s": round(steps["extract"], 1),
        "docs_per_s_wall": round(docs / seconds, 1),
        "docs_per_s_flow": round(docs / flow_s, 1),
    }


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_two_nodes_run_the_job_like_one_process(tmp_path, monkeypatch):
    from curate.config import load_config
    from curate.runner import run_pipeline
    from flows import server

    config = tmp_path / "cluster.yaml"
    config.write_text(JOB)
    shared = tmp_path / "shared"  # the run directories: one filesystem both nodes see
    local = tmp_path / "local"
    local_start = time.perf_counter()
    run_pipeline(load_config(config, [f"run_dir={local}"]))
    local_s = time.perf_counter() - local_start

    temp_root = Path(tempfile.mkdtemp(prefix="slc-", dir="/tmp"))  # short: Ray's unix sockets
    head, worker = RayNode(str(temp_root / "h")), RayNode(str(temp_root / "w"))
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "sluice"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))  # the server's own database
    (tmp_path / "sluice").mkdir()
    started = time.perf_counter()
    try:
        with network() as net:
            port = _free_port(net.head_ip)
            address = f"{net.head_ip}:{port}"
            api = server.start_background(net.head_ip, _free_port(net.head_ip), timeout=240)
            env = {  # without the local-Ray setting an earlier in-process run left behind
                **{k: v for k, v in os.environ.items() if k not in runtime.LOCAL_RAY_ENV},
                **runtime.TELEMETRY_ENV,
                "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "PREFECT_API_URL": api,  # what the workers get from the flow
                "NO_PROXY": f"{net.head_ip},{net.worker_ip},127.0.0.1,localhost",
            }
            common = ["--num-cpus", "1", "--object-store-memory", str(OBJECT_STORE)]
            head.start(
                [],
                [
                    "--head",
                    "--port",
                    str(port),
                    "--node-ip-address",
                    net.head_ip,
                    "--include-dashboard=false",
                    "--dashboard-port",
                    str(_free_port(net.head_ip)),
                    "--ray-client-server-port",
                    str(_free_port(net.head_ip)),
                    "--dashboard-agent-listen-port",
                    str(_free_port(net.head_ip)),
                    *common,
                ],
                env,
            )
            assert len(_wait_nodes(address, 1, env)) == 1

            one = shared / "one-node"
            one_s = _sluice_run(config, str(one), address, env)
            one_tasks = json.loads((one / "tasks.json").read_text())
            assert len(one_tasks["nodes"]) == 1

            worker.start(
                net.worker_prefix(),
                [
                    "--address",
                    address,
                    "--node-ip-address",
                    net.worker_ip,
                    "--dashboard-agent-listen-port",
                    str(_free_port(runtime.LOCAL_HOST)),
                    *common,
                ],
                env,
            )
            nodes = _wait_nodes(address, 2, env)
            assert len(nodes) == 2, nodes
            if net.mode == "netns":
                assert sorted(nodes.values()) == sorted([net.head_ip, net.worker_ip])

            two = shared / "two-nodes"
            two_s = _sluice_run(config, f"file://{two}", address, env)
            tasks = json.loads((two / "tasks.json").read_text())
    finally:
        worker.stop()
        head.stop()
        server.stop_background()
        subprocess.run(["rm", "-rf", str(temp_root)], check=False)
    total_s = time.perf_counter() - started

    # every task ran on a node of this cluster, and every per-part step used both nodes
    assert set(tasks["nodes"]) == set(nodes), (tasks["nodes"], nodes)
    if net.mode == "netns":
        assert sorted(tasks["nodes"].values()) == sorted([net.head_ip, net.worker_ip])
    for step in PER_PART_STEPS:
        assert set(tasks["steps"][step]) == set(nodes), (step, tasks["steps"][step])
    assert set(one_tasks["nodes"]) <= set(nodes)

    # both cluster runs (plain path, file:// URL) equal the in-process run byte for byte
    n_files = _assert_same_bytes(one, local)
    assert _assert_same_bytes(two, local) == n_files
    assert n_files > 20

    record = {
        "mode": net.mode,
        "in_process": _docs_per_s(local, local_s),
        "one_node": _docs_per_s(one, one_s),
        "two_nodes": _docs_per_s(two, two_s),
        "parts": len(json.loads((local / "parts.json").read_text())["parts"]),
        "files_compared": n_files,
        "test_s": round(total_s, 1),
        "load": os.getloadavg(),
        "nproc": os.cpu_count(),
    }
    print(f"\ncluster test: {json.dumps(record)}")
    if out := os.environ.get("SLUICE_CLUSTER_RESULTS"):
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")


def test_local_copy_fetches_a_remote_file_once_per_version(tmp_path):
    """Readers that open only local files (SentencePiece, fastText) get a per-machine copy of a
    remote model; a changed file is fetched again, a local one is used where it is."""
    import fsspec

    from curate.storage import local_copy

    url = f"memory://sluice-local-copy-{os.getpid()}/tokenizer.model"
    fs = fsspec.filesystem("memory")
    try:
        fs.pipe(url, b"x" * 10)
        first = local_copy(url, tmp_path)
        assert Path(first).parent == tmp_path and Path(first).read_bytes() == b"x" * 10
        stamp = os.stat(first).st_mtime_ns
        assert local_copy(url, tmp_path) == first and os.stat(first).st_mtime_ns == stamp
        fs.pipe(url, b"y" * 20)
        second = local_copy(url, tmp_path)
        assert second != first and Path(second).read_bytes() == b"y" * 20
        with pytest.raises(FileNotFoundError):
            local_copy(url + ".missing", tmp_path)
    finally:
        fs.rm(url.rsplit("/", 1)[0], recursive=True)
    here = tmp_path / "local.model"
    here.write_bytes(b"z")
    assert local_copy(str(here), tmp_path / "cache") == str(here)
    assert local_copy(f"file://{here}", tmp_path / "cache") == str(here)
    assert not (tmp_path / "cache").exists()
