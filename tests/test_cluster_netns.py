"""Two worker machines: workers in two network namespaces joined by a veth pair.

Namespace A holds Redis, the simulator, worker A and the producer; namespace B holds
worker B, which reaches Redis and the provider across the veth pair, as a second
machine would. Both namespaces and their addresses are made by this test and removed
after it; no traffic leaves them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from genfleet.embedded import find_redis_server

ROOT = Path(__file__).resolve().parent.parent
SUFFIX = os.getpid() % 10_000
NS_A, NS_B = f"gfa{SUFFIX}", f"gfb{SUFFIX}"
NET = f"10.213.{SUFFIX % 250}"
ADDR_A, ADDR_B = f"{NET}.1", f"{NET}.2"
REDIS_PORT, SIM_PORT = 6390, 8089
LIMIT = 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _netns_available() -> bool:
    if shutil.which("ip") is None or os.geteuid() != 0:
        return False
    probe = f"gfprobe{SUFFIX}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError):
        return False
    _ip("netns", "del", probe)
    return True


pytestmark = pytest.mark.skipif(
    not _netns_available(),
    reason="needs root and iproute2 to create network namespaces (CI runs as root)",
)


@dataclass
class Net:
    procs: list[subprocess.Popen]
    logs: Path

    def start(self, ns: str, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, *args], env=env, stdout=log, stderr=log,
            stdin=subprocess.DEVNULL, cwd=ROOT,
        ))  # fmt: skip

    def run(self, ns: str, args: list[str], env: dict[str, str], timeout: float) -> str:
        out = subprocess.run(["ip", "netns", "exec", ns, *args], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=timeout)  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    _ip("netns", "add", NS_A)
    _ip("netns", "add", NS_B)
    handle = Net([], tmp_path)
    try:
        _ip("link", "add", f"v{NS_A}", "type", "veth", "peer", "name", f"v{NS_B}")
        for ns, addr in ((NS_A, ADDR_A), (NS_B, ADDR_B)):
            _ip("link", "set", f"v{ns}", "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", f"v{ns}")
            _ip("-n", ns, "link", "set", f"v{ns}", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield handle
    finally:
        for proc in reversed(handle.procs):
            proc.terminate()
        for proc in handle.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for ns in (NS_A, NS_B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


PRODUCER = """
import json
from producer import submit_chapter
handles = [submit_chapter("netns", n, "Two machines share one job.", versions=6) for n in (1, 2)]
views = [h.wait(timeout=120, progress=False) for h in handles]
print(json.dumps([{"status": v.status, "workers": [r.worker for r in v.ok.values()]}
                  for v in views]))
"""


FETCH = (
    "import sys, urllib.request as u; "
    "print(u.build_opener(u.ProxyHandler({})).open(sys.argv[1]).read().decode())"
)


def _wait_ready(files: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(f.exists() for f in files):
        assert time.monotonic() < deadline, "workers did not get ready"
        time.sleep(0.1)


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_workers_on_two_machines_share_a_job_under_one_limit(net: Net, tmp_path: Path) -> None:
    redis_url = f"redis://{ADDR_A}:{REDIS_PORT}/0"
    env = {
        **os.environ, "REDIS_URL": redis_url, "GENFLEET_HOME": str(tmp_path / "home"),
        "OPENAI_BASE_URL": f"http://{ADDR_A}:{SIM_PORT}/v1", "OPENAI_API_KEY": "test-key-0001",
        "LLM_MAX_CONCURRENT": str(LIMIT), "WRITER_MAX_PARALLEL_REQUESTS": "6",
        "PYTHONPATH": str(ROOT),
    }  # fmt: skip
    net.start(NS_A, "redis", [find_redis_server(), "--bind", ADDR_A, "--port", str(REDIS_PORT),
                              "--save", "", "--appendonly", "no"], env)  # fmt: skip
    net.start(NS_A, "simulator", [sys.executable, "-m", "simulator", "--host", ADDR_A,
                                  "--port", str(SIM_PORT), "--latency-ms", "400"], env)  # fmt: skip
    ready = []
    for ns, name in ((NS_A, "wa"), (NS_B, "wb")):
        ready.append(tmp_path / f"{name}.ready")
        worker_env = {**env, "GENFLEET_READY_FILE": str(ready[-1])}
        net.start(ns, name, [sys.executable, "-m", "celery", "-A", "workers", "worker",
                             "-Q", "llm,control", "-P", "threads", "-c", "4",
                             "-n", f"{name}@%h", "--without-gossip", "--without-mingle"],
                  worker_env)  # fmt: skip
    _wait_ready(ready)
    jobs = json.loads(net.run(NS_A, [sys.executable, "-c", PRODUCER], env, timeout=180))
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
    nodes = {w.split("@")[0] for j in jobs for w in j["workers"]}
    assert nodes == {"wa", "wb"}  # the second machine really took steps
    fetch = [sys.executable, "-c", FETCH, f"http://{ADDR_A}:{SIM_PORT}/stats"]
    stats = json.loads(net.run(NS_B, fetch, env, timeout=30))  # read from machine B
    assert stats["by_status"] == {"200": 12}
    assert stats["max_in_flight"] == LIMIT  # one global limit for both machines
