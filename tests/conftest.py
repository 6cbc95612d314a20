"""Shared fixtures: a real Redis (flushing only its test database), the simulator,
and real Celery worker subprocesses.

Redis: ``GENFLEET_TEST_REDIS_URL`` if set; else 127.0.0.1:6379 database 15 when a
server answers there (and ``GENFLEET_TEST_EMBEDDED`` is unset); else an embedded
redis-server started for the session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from genfleet.embedded import EmbeddedRedis
from producer.processes import ChildProcess, start_worker
from simulator.process import SimulatorProcess

TEST_DB = 15
ROOT = Path(__file__).resolve().parent.parent


# Every variable genfleet (or Flower) reads: the tests must pass whatever a user has set.
SETTING_PREFIXES = (
    "REDIS_", "OPENAI_", "LLM_", "WRITER_", "IMAGE_", "GENFLEET_", "RESULT_", "BROKER_",
    "FLOWER_", "MAX_CONCURRENT", "LOG_LEVEL",
)  # fmt: skip
TEST_VARIABLES = ("GENFLEET_TEST_REDIS_URL", "GENFLEET_TEST_EMBEDDED")


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from genfleet's defaults, not from the user's environment."""
    for name in list(os.environ):
        if name.upper().startswith(SETTING_PREFIXES) and name not in TEST_VARIABLES:
            monkeypatch.delenv(name)


def _local_redis_answers() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    explicit = os.environ.get("GENFLEET_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    # GENFLEET_TEST_EMBEDDED=1 forces the path a machine without a Redis server takes.
    if not os.environ.get("GENFLEET_TEST_EMBEDDED") and _local_redis_answers():
        yield f"redis://127.0.0.1:6379/{TEST_DB}"
        return
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("embedded-redis"))
    base = embedded.start()
    try:
        yield base.rsplit("/", 1)[0] + f"/{TEST_DB}"
    finally:
        embedded.stop()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test database, flushed before the test."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "genfleet-home"


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, home: Path, r: redis.Redis
) -> dict[str, str]:
    """This process's environment pointed at the test Redis and a private home."""
    for name in list(os.environ):
        if name.startswith(("LLM_", "WRITER_", "OPENAI_", "MAX_CONCURRENT", "GENFLEET_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("GENFLEET_HOME", str(home))
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-0001")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    _reset_producer()
    return dict(os.environ)


def _reset_producer() -> None:
    from producer.client import forget_default

    forget_default()


@pytest.fixture
def sim(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatorProcess]:
    """The simulator with a short latency, wired into ``env``."""
    with SimulatorProcess(latency_ms=200) as s:
        monkeypatch.setenv("OPENAI_BASE_URL", s.base_url)
        env["OPENAI_BASE_URL"] = s.base_url
        yield s


class Workers:
    """Starts Celery worker subprocesses; stops each by PID at the end of the test."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[ChildProcess] = []

    def start(
        self, name: str = "w1", queues: tuple[str, ...] = ("llm", "control"),
        concurrency: int = 4, pool: str = "threads", extra: tuple[str, ...] = (), **env: Any,
    ) -> ChildProcess:  # fmt: skip
        child_env = {**self.env, **os.environ, **{k: str(v) for k, v in env.items()}}
        child = start_worker(
            list(queues), concurrency=concurrency, pool=pool, name=name,
            env=child_env, log_path=self.logs / f"{name}.log", extra=extra,
        )  # fmt: skip
        self.started.append(child)
        return child

    def stop_all(self) -> None:
        for child in self.started:
            child.stop()


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    w = Workers(env, tmp_path / "logs")
    try:
        yield w
    finally:
        w.stop_all()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_pids(pid: int) -> list[int]:
    """The PIDs of a process's children."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def wait_for(check: Callable[[], Any], timeout: float, what: str, poll_s: float = 0.2) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f}s")
        time.sleep(poll_s)


def pid_alive(pid: int) -> bool:
    """Whether a process (of ours) still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def genfleet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "producer.cli", *args]
