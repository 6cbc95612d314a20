"""The embedded Redis is a real redis-server: one per GENFLEET_HOME, on a stable address,
with a password kept 0600, CONFIG disabled, private files, shared, persisted, stopped."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import redis

from genfleet.embedded import EmbeddedRedis
from tests.conftest import ROOT, pid_alive, wait_for

EXAMPLES = ROOT / "examples"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow  # 3 s or more on 2 cores: `pytest -m slow`; .ci/run runs it
def test_start_reuse_persist_and_stop(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    url = first.start()
    assert first.owned and first.process is not None
    pid = first.process.pid
    client = redis.Redis.from_url(url)
    assert client.info("server")["redis_version"]
    client.set("kept", "yes")
    port = url.rsplit(":", 1)[1].split("/")[0]
    with pytest.raises(redis.AuthenticationError):  # a password is required ...
        redis.Redis(port=int(port)).ping()
    with pytest.raises(redis.ResponseError):  # ... and CONFIG (SET dir ...) is gone
        client.config_set("dir", "/tmp")
    folder = tmp_path / "redis"
    assert _mode(folder / "password") == 0o600 and _mode(folder) == 0o700
    client.bgrewriteaof()
    wait_for(lambda: any(folder.rglob("*.aof")), 10, "the append-only file")
    assert all(_mode(f) & 0o077 == 0 for f in folder.rglob("*.aof"))

    second = EmbeddedRedis(tmp_path)
    assert second.start() == url
    assert not second.owned  # attached, not started
    assert pid_alive(pid)

    assert first.stop()
    assert not pid_alive(pid)
    client.close()

    third = EmbeddedRedis(tmp_path)
    assert third.start() == url  # the same address and password again
    try:
        assert redis.Redis.from_url(url).get("kept") == b"yes"  # the AOF survived the restart
    finally:
        third.stop()


def test_after_a_crash_the_next_start_uses_the_same_address(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    url = first.start()
    assert first.process is not None
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    second = EmbeddedRedis(tmp_path)
    try:
        assert second.start() == url and second.owned
    finally:
        second.stop()


def test_a_stale_state_file_starts_a_new_server(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "redis.json").write_text('{"port": "x", "pid": 1}')
    emb = EmbeddedRedis(tmp_path)
    try:
        assert emb.start() and emb.owned
    finally:
        emb.stop()


def _servers(home: Path) -> list[psutil.Process]:
    """redis-server processes working in this home's folder (their title hides args)."""
    found = []
    for proc in psutil.process_iter(["name", "cwd"]):
        if "redis" in (proc.info["name"] or "") and str(home) in (proc.info["cwd"] or ""):
            found.append(proc)
    return found


@pytest.mark.slow
def test_twenty_concurrent_submits_share_one_embedded_redis(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "OPENAI_", "LLM_", "GENFLEET_"))}  # fmt: skip
    env.update({"GENFLEET_HOME": str(home), "PYTHONPATH": str(ROOT)})
    command = [sys.executable, "-m", "producer.cli", "submit", "tweets", "--persona",
               str(EXAMPLES / "personas" / "mika.json"), "--calendar",
               str(EXAMPLES / "calendars" / "mika.json"), "--count", "1"]  # fmt: skip

    def submit(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)

    try:
        with ThreadPoolExecutor(20) as pool:
            runs = list(pool.map(submit, range(20)))
        assert [r.returncode for r in runs] == [0] * 20, [r.stderr for r in runs if r.returncode]
        servers = _servers(home)
        assert len(servers) == 1  # one server, which outlived the command that started it
        url = EmbeddedRedis(home).running_url()
        assert url is not None
        client = redis.Redis.from_url(url, decode_responses=True)
        jobs = [k for k in client.keys("genfleet:job:*") if k.count(":") == 2]
        assert len(jobs) == 20 and all(client.hget(j, "status") == "queued" for j in jobs)
    finally:
        EmbeddedRedis(home).stop()
    assert not _servers(home)
